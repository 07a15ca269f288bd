"""The attention report of one text: what it shows (`analyse`) and the files that show it (`write_report`).

`write_report` writes, into one folder: overview.png and layer_*.png (see `minigpt.inspection.heatmaps`), attention.html
(one self-contained page built from the ``page.html`` template shipped with the package), attention.npz
(the raw weights), heads.json (per-head statistics), after an ablation importance.png, with the logit lens
logit_lens.png, and after activation patching patching_heads.png and patching_residual.png. The commands that
draw attention maps call ``write_report(out_dir, analyse(model, enc, ids, ...))``; the training callback calls
`analyse` and draws the same overview.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import tiktoken
import torch
from torch import Tensor

from minigpt import staging
from minigpt.errors import NOT_FINITE, MiniGPTError
from minigpt.folders import first_missing, refuse_dangling_link, remove_made
from minigpt.inspection import ablation, circuit_figures, heatmaps
from minigpt.inspection import maps as attention
from minigpt.inspection.ablation import Importance, Windows
from minigpt.inspection.heatmaps import Panels
from minigpt.inspection.lens import LogitLens
from minigpt.inspection.maps import AttentionMaps, HeadStats, top_heads
from minigpt.inspection.patching import Patching
from minigpt.jsonfile import read_object
from minigpt.model import GPT

PAGE_TEMPLATE = "page.html"
DATA_PLACEHOLDER = "/*ATTENTION_DATA*/"

HEAD_STAT_DEFINITIONS = {
    "entropy": "mean entropy (nats) of the head's attention rows on the prompt",
    "previous_token": "mean weight on position i-1 over queries i >= 1 on the prompt",
    "first_token": "mean weight on position 0 (attention sink) over queries i >= 1 on the prompt",
    "induction": "on random tokens repeated twice: mean weight on the token after the previous occurrence "
    "of the current token, over the second half",
}
LOSS_CHANGE_DEFINITION = (
    "with --ablate: how much the mean loss (nats/token) rises when the head's output is zeroed, on the text "
    "named under ablation.on; negative where it falls"
)


@dataclass
class Analysis:
    """Everything a report shows of one text."""

    maps: AttentionMaps
    """The weights of every layer and head (and the ids they belong to)."""
    tokens: list[str]
    """Each token of `maps.ids` as text."""
    png: Panels
    """What the PNGs draw: the selected heads of the selected layers, or their aggregate alone."""
    page: Panels
    """What the page offers: the selected heads, then the aggregate if there is one."""
    aggregates: dict[str, Tensor]
    """The aggregate's (n_layer, T, T) maps over the selected heads, by name; empty without one."""
    stats: HeadStats
    """Statistics of every head."""
    importance: Importance | None = None
    """Each head's effect on the loss when zeroed, when an ablation was asked for."""
    lens: LogitLens | None = None
    """The logit lens of the text, when asked for."""
    patching: Patching | None = None
    """What patching each activation from a clean text into a corrupted one restores, when asked for."""


def token_strings(enc: tiktoken.Encoding, ids: Sequence[int]) -> list[str]:
    """Each token decoded on its own (a partial UTF-8 character shows as �; an id that names no token, which the
    logit lens may rank, as <unused N>)."""
    return [_token_string(enc, i) for i in ids]


def _token_string(enc: tiktoken.Encoding, i: int) -> str:
    try:
        return enc.decode_single_token_bytes(i).decode("utf-8", errors="replace")
    except KeyError:
        return f"<unused {i}>"


def analyse(
    model: GPT,
    enc: tiktoken.Encoding,
    ids: Sequence[int],
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    aggregate: str | None = None,
    ablate_on: Windows | None = None,
) -> Analysis:
    """Run `ids` through `model` once and gather what a report shows of the `layers` and `heads` chosen (default:
    all), with `aggregate` (one of `attention.AGGREGATES`) over those heads if given, and with `ablate_on`, the
    importance of every head measured on those windows (see `minigpt.inspection.ablation`)."""
    config = model.config
    layers = list(range(config.n_layer)) if layers is None else list(layers)
    heads = list(range(config.n_head)) if heads is None else list(heads)
    maps = attention.extract(model, ids)
    if not torch.isfinite(maps.weights).all():
        raise MiniGPTError(NOT_FINITE)
    selected = maps.weights[:, heads]  # (L, h, T, T)
    columns = [str(h) for h in heads]
    aggregates = {aggregate: attention.aggregate(selected, aggregate)} if aggregate else {}
    if aggregate:
        # The PNGs show the aggregate alone; the page offers it beside every selected head.
        combined = aggregates[aggregate][layers, None]  # (l, 1, T, T)
        png = Panels(combined, layers, [aggregate])
        page = Panels(torch.cat([selected[layers], combined], dim=1), layers, [*columns, aggregate])
    else:
        png = page = Panels(selected[layers], layers, columns)
    stats = attention.head_stats(model, maps.weights)
    importance = ablation.head_importance(model, ablate_on) if ablate_on is not None else None
    return Analysis(maps, token_strings(enc, maps.ids), png, page, aggregates, stats, importance)


REPORT_FILE = re.compile(
    r"overview\.png|layer_\d+(_head_\d+)?\.png|importance\.png|logit_lens\.png|patching_(heads|residual)\.png"
    r"|attention\.(html|npz)"
)
"""The names of the files a report writes besides heads.json, which lists those it wrote (``files``)."""
MAX_HEADS_JSON = 64 << 20  # a report's heads.json is kilobytes; a larger one is not a report's


def write_report(out_dir: Path, analysis: Analysis, *, per_head: bool = False, top: int = 3) -> list[Path]:
    """Write the files of `analysis` into `out_dir` (created if needed); return their paths.

    `per_head` draws one PNG per head instead of one per layer; heads.json ranks the `top` heads of each kind.
    The files are written into a temporary folder inside `out_dir` and then moved over its own, all or none, so
    a run that fails (`MiniGPTError` for a folder that cannot be written) leaves what was there as it was. Once
    they are in, the files that an earlier report's heads.json lists and this one does not write (a deeper
    model's layer_5.png, an importance.png) are removed: the folder shows one analysis. No other file is touched.
    Temporary folders that killed runs left in `out_dir` are removed first.
    """
    refuse_dangling_link(out_dir, "cannot write attention maps to")
    made = None
    try:
        made = first_missing(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with staging.staging_folder(out_dir, STAGING_NAME, "attention") as staged:
            names = [path.name for path in _write_all(staged, analysis, per_head, top)]
            with staging.locked(out_dir):  # another save into the folder moves its report in before or after, never between
                staging.sweep(out_dir, "attention", STAGING_NAME, lambda dead: staging.undo_unfinished(dead, out_dir))
                earlier = _listed_files(out_dir / "heads.json")
                _move_in(staged, out_dir, names)
                for name in set(earlier) - set(names):
                    with contextlib.suppress(OSError):  # the new report is in: a file left over is no failure
                        (out_dir / name).unlink()
    except BaseException as err:  # a full disk, Ctrl-C: this run's files are out again, and the folders it made go
        if made is not None:
            remove_made(out_dir, made)
        if isinstance(err, OSError):
            raise MiniGPTError(f"cannot write attention maps to {_shown(out_dir)}: {err.strerror or err}") from None
        raise
    return [out_dir / name for name in names]


STAGING_NAME = "report"
"""The name in the temporary folders (``.report.<id>.attention.tmp``) a report is written into inside its folder."""


def _move_in(staged: Path, out_dir: Path, names: list[str]) -> None:
    """Move the report's files `names` from `staged` over those of `out_dir`, all or none (`staging.move_in`); a
    name taken by a folder, which no file can replace, is refused first."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(out_dir / name).st_mode):
                raise MiniGPTError(f"cannot write attention maps to {_shown(out_dir)}: its {name} is a folder; move it away")
    staging.move_in(staged, out_dir, names)


def _listed_files(heads_json: Path) -> list[str]:
    """The report files an earlier report's heads.json lists as written (names only; none if it lists none or
    is not a report's)."""
    if not heads_json.is_file():  # a FIFO would block the read
        return []
    try:
        listed = read_object(heads_json, "heads.json", max_bytes=MAX_HEADS_JSON).get("files", [])
    except MiniGPTError:
        return []
    return [name for name in listed if isinstance(name, str) and REPORT_FILE.fullmatch(name)] if isinstance(listed, list) else []


def _shown(path: Path) -> str:
    """`path` quoted (a newline in it must not break the one-line message), cut short if it is long."""
    text = repr(str(path))
    return text if len(text) <= 100 else f"{text[:97]}..."


def _write_all(folder: Path, analysis: Analysis, per_head: bool, top: int) -> list[Path]:
    a = analysis
    written = [
        *heatmaps.write_pngs(folder, a.png, a.tokens, per_head=per_head),
        write_html(folder / "attention.html", a.page, a.tokens, a.stats, a.importance, lens=a.lens, patching=a.patching),
        write_npz(folder / "attention.npz", a.maps.weights, a.tokens, a.maps.ids, a.aggregates),
    ]
    if a.lens is not None:
        written.append(circuit_figures.write_lens_png(folder, a.lens))
    if a.patching is not None:
        written += circuit_figures.write_patching_pngs(folder, a.patching)
    if a.importance is not None:
        title = (
            f"How much the loss rises when each head's output is zeroed, on {a.importance.source} "
            f"({a.importance.tokens:,} tokens; loss {a.importance.base_loss:.3f} nats/token with every head)"
        )
        written.append(heatmaps.save(heatmaps.importance_figure(a.importance.loss_change, title), folder / "importance.png"))
    files = [path.name for path in written]
    return [*written, write_heads_json(folder / "heads.json", a.stats, top, a.importance, a.patching, files=files)]


def write_npz(
    path: Path, weights: Tensor, tokens: Sequence[str], ids: Sequence[int], aggregates: dict[str, Tensor]
) -> Path:
    """Raw weights (n_layer, n_head, T, T) float32, token strings and ids, plus any aggregate (n_layer, T, T)."""
    arrays = {name: maps.numpy().astype(np.float32) for name, maps in aggregates.items()}
    np.savez_compressed(
        path, weights=weights.numpy().astype(np.float32), tokens=np.array(tokens), ids=np.array(ids), **arrays
    )
    return path


def _json_number(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


def _table(scores: Tensor) -> list[list[float | None]]:
    """An (n_layer, n_head) score table as [layer][head] lists, null where undefined."""
    return [[_json_number(float(x)) for x in row] for row in scores]


def heads_record(
    stats: HeadStats, top: int, importance: Importance | None = None, patching: Patching | None = None
) -> dict:
    """Plain data for heads.json: definitions, one record per head, and the `top` heads of each kind; with
    `importance`, each head's ``loss_change`` too, and what it was measured on under ``ablation``; with
    `patching`, its results under ``patching`` (`Patching.record`)."""
    kinds = stats.kinds()
    definitions = dict(HEAD_STAT_DEFINITIONS)
    if importance is not None:
        kinds["loss_change"] = importance.loss_change
        definitions["loss_change"] = LOSS_CHANGE_DEFINITION
    n_layer, n_head = stats.entropy.shape
    heads = [
        {"layer": l, "head": h, **{kind: _json_number(float(scores[l, h])) for kind, scores in kinds.items()}}
        for l in range(n_layer)
        for h in range(n_head)
    ]
    # Low entropy is the notable end: a focused head.
    ranked = {
        kind: [
            {"layer": l, "head": h, "score": round(s, 6)}
            for l, h, s in top_heads(scores, top, largest=kind != "entropy")
        ]
        for kind, scores in kinds.items()
    }
    record = {"definitions": definitions, "heads": heads, "top": ranked}
    if importance is not None:
        record["ablation"] = ablation_record(importance)
    if patching is not None:
        record["patching"] = patching.record()
    return record


def ablation_record(importance: Importance) -> dict:
    """What the loss changes were measured on: the intact loss, the number of tokens and where they came from."""
    return {"base_loss": round(importance.base_loss, 6), "tokens": importance.tokens, "on": importance.source}


def write_heads_json(
    path: Path, stats: HeadStats, top: int, importance: Importance | None = None, patching: Patching | None = None,
    files: Sequence[str] = (),
) -> Path:  # fmt: skip
    """heads.json: see `heads_record`; with ``files``, the other files the report wrote (what a later report into
    the same folder replaces or removes)."""
    record = {**heads_record(stats, top, importance, patching), "files": list(files)}
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def html_data(
    panels: Panels, tokens: Sequence[str], stats: HeadStats, importance: Importance | None = None, *,
    lens: LogitLens | None = None, patching: Patching | None = None,
) -> dict:  # fmt: skip
    """The JSON embedded in attention.html; weights rounded to 5 decimals to keep the page small.

    `stats` holds each kind's scores of every head as [layer][head] lists (null where undefined); `importance`
    the loss change of every head the same way, with what it was measured on (null without an ablation); `lens`
    and `patching` their records (`LogitLens.record`, `Patching.record`; null when not asked for).
    """
    return {
        "tokens": list(tokens),
        "layers": panels.rows,
        "heads": panels.cols,
        "weights": np.round(panels.maps.numpy().astype(np.float64), 5).tolist(),
        "stats": {kind: _table(scores) for kind, scores in stats.kinds().items()},
        "importance": None
        if importance is None
        else {"loss_change": _table(importance.loss_change), **ablation_record(importance)},
        "lens": None if lens is None else lens.record(),
        "patching": None if patching is None else patching.record(),
    }


def page_template() -> str:
    """The page shipped with the package, with `DATA_PLACEHOLDER` where the data goes."""
    return resources.files("minigpt.inspection").joinpath(PAGE_TEMPLATE).read_text(encoding="utf-8")


def page_html(
    panels: Panels, tokens: Sequence[str], stats: HeadStats, importance: Importance | None = None, *,
    lens: LogitLens | None = None, patching: Patching | None = None,
) -> str:  # fmt: skip
    """One self-contained page (inline CSS/JS, data as embedded JSON, no network) to explore `panels`, with the
    logit lens and the patching results beside the maps when given."""
    data = html_data(panels, tokens, stats, importance, lens=lens, patching=patching)
    data = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    # Text in the data (a token, a corpus name) must not end the script block early ("</script>") or open the
    # "<!--" that makes HTML look for a second </script>: every "<" is written as its JSON escape.
    data = data.replace("<", "\\u003c")
    return page_template().replace(DATA_PLACEHOLDER, data)


def write_html(
    path: Path, panels: Panels, tokens: Sequence[str], stats: HeadStats, importance: Importance | None = None, *,
    lens: LogitLens | None = None, patching: Patching | None = None,
) -> Path:  # fmt: skip
    """attention.html: see `page_html`."""
    path.write_text(page_html(panels, tokens, stats, importance, lens=lens, patching=patching), encoding="utf-8")
    return path
