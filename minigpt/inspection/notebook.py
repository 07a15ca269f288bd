"""The attention page inside a Jupyter output cell: the page `minigpt attention` writes as attention.html
(model view, head view, statistics, importance), shown in an iframe whose document is the page itself.

``srcdoc`` keeps it offline and self-contained like the file (nothing is fetched, nothing is written), and the
iframe keeps the page's script and styles apart from the notebook's own.
"""

from __future__ import annotations

import html

from minigpt.inspection.report import Analysis, page_html

MIN_HEIGHT_PX = 480
"""The frame's height until the page has drawn; then it takes the page's own height."""
# Runs in the notebook's page once the frame's document has loaded: the frame grows to show the whole page.
_FIT_HEIGHT = "this.style.height=(this.contentDocument.documentElement.scrollHeight+24)+'px'"


def notebook_html(analysis: Analysis) -> str:
    """An ``<iframe>`` holding the whole attention page of `analysis`, for `_repr_html_`."""
    page = page_html(
        analysis.page, analysis.tokens, analysis.stats, analysis.importance, lens=analysis.lens, patching=analysis.patching
    )
    return (
        f'<iframe class="minigpt-attention" title="minigpt attention" srcdoc="{html.escape(page, quote=True)}" '
        f'style="width:100%;min-height:{MIN_HEIGHT_PX}px;border:1px solid #ddd" onload="{_FIT_HEIGHT}"></iframe>'
    )
