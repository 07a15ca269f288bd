"""The figures of the logit lens (logit_lens.png) and of activation patching (patching_heads.png,
patching_residual.png), drawn with matplotlib like the maps in `minigpt.inspection.heatmaps`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from minigpt.inspection import heatmaps
from minigpt.inspection.heatmaps import visible
from minigpt.inspection.lens import LogitLens
from minigpt.inspection.patching import Patching

LENS_PNG_POSITIONS = 32
"""logit_lens.png shows the last this many positions (the page and `LogitLens` have them all)."""
LENS_CELL_INCHES = 0.5
LENS_ROW_INCHES = 0.4
LENS_MARGINS = (0.9, 0.9, 0.5)  # left (row names), bottom (position tokens, axis title), top (title)


def write_lens_png(folder: Path, lens: LogitLens) -> Path:
    """logit_lens.png: see `lens_figure`."""
    return heatmaps.save(lens_figure(lens), folder / "logit_lens.png")


def lens_figure(lens: LogitLens) -> Figure:
    """logit_lens.png: the top next token after every block at the last `LENS_PNG_POSITIONS` positions."""
    shown = slice(-LENS_PNG_POSITIONS, None)
    first = max(len(lens.tokens) - LENS_PNG_POSITIONS, 0)
    title = "Logit lens: the most likely next token read out after each block (final LayerNorm + LM head)" + (
        f", positions {first}-{len(lens.tokens) - 1}" if first else ""
    )
    top = [[position[0] for position in row[shown]] for row in lens.top]
    return lens_table_figure(top, lens.probs[:, shown, 0], lens.layers, lens.tokens[shown], title)


def write_patching_pngs(folder: Path, patching: Patching) -> list[Path]:
    """patching_heads.png (layer × head) and patching_residual.png (after n blocks × position): the share of the
    clean-vs-corrupt difference that each activation restores."""
    said = f"Share of {patching.metric} restored (clean {patching.clean:.3f}, corrupt {patching.corrupt:.3f})"
    n_layer, n_head = patching.heads.shape
    common = {"label": "share restored", "limit": 1.0, "fmt": "{:.2f}"}
    heads = heatmaps.score_grid_figure(
        patching.heads, f"{said} by each head's output", [str(l) for l in range(n_layer)], [str(h) for h in range(n_head)], **common
    )
    positions = [f"{visible(c)}/{visible(x)}" if c != x else visible(c)
                 for c, x in zip(patching.clean_tokens, patching.corrupt_tokens)]  # fmt: skip
    residual = heatmaps.score_grid_figure(
        patching.residual, f"{said} by the residual stream at one position", patching.layers, positions,
        xlabel="position (clean/corrupted token)", ylabel="after", **common,
    )  # fmt: skip
    return [heatmaps.save(heads, folder / "patching_heads.png"), heatmaps.save(residual, folder / "patching_residual.png")]


def lens_table_figure(top: Sequence[Sequence[str]], probs: Tensor, rows: Sequence[str], tokens: Sequence[str], title: str) -> Figure:
    """The logit lens as a table: rows (after n blocks) down, positions across (labelled with their tokens), each
    cell the top next token printed on its probability `probs` (rows, T), on a 0-1 scale."""
    n_rows, T = probs.shape
    left, bottom, top_margin = LENS_MARGINS
    width = max(heatmaps.IMPORTANCE_MIN_WIDTH, left + T * LENS_CELL_INCHES + heatmaps.COLORBAR_INCHES)
    height = bottom + n_rows * LENS_ROW_INCHES + top_margin
    fig = Figure(figsize=(width, height), dpi=heatmaps.DPI)
    grid = (left / width, bottom / height, T * LENS_CELL_INCHES / width, n_rows * LENS_ROW_INCHES / height)
    ax = fig.add_axes(grid)
    cax = fig.add_axes(((left + T * LENS_CELL_INCHES + 0.2) / width, grid[1], 0.18 / width, grid[3]))
    image = ax.imshow(probs.numpy(), cmap=heatmaps.CMAP, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    for (r, c), p in np.ndenumerate(probs.numpy()):
        ax.text(c, r, heatmaps.visible(top[r][c])[:6], ha="center", va="center", fontsize=7, color="black" if p > 0.6 else "white")
    ax.set_xticks(range(T), [heatmaps.visible(t)[:heatmaps.MAX_LABEL_CHARS] for t in tokens], rotation=90, fontsize=7)
    ax.set_yticks(range(n_rows), list(rows), fontsize=8)
    ax.set_xlabel("position (its token)")
    ax.set_title(title, fontsize=9, loc="left")
    fig.colorbar(image, cax=cax, label="probability")
    return fig
