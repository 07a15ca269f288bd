"""Attention heatmaps drawn with matplotlib (Agg, no display): the overview grid and labelled per-layer figures.

Every heatmap puts query tokens down and key tokens across, on one shared colour scale. Importing this module
imports matplotlib, which is slow: commands import it only when they draw.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.image import imsave
from torch import Tensor

DPI = 100
OVERVIEW_PANEL_INCHES = 1.6
# Past this many tokens an axis labels every k-th token only, so labels never overlap.
MAX_LABELS = 64
LABEL_MARGIN_INCHES = 1.2
# Fixed layouts in inches (no constrained layout: it measures every tick label and triples the drawing time).
OVERVIEW_MARGINS = (0.55, 0.08, 0.25)  # left (layer + query labels), bottom, top (head title)
OVERVIEW_FOOTER = 0.3  # below the last row only: its "key →" labels
LAYER_MARGINS = (LABEL_MARGIN_INCHES, LABEL_MARGIN_INCHES, 0.4)
COLORBAR_INCHES = 1.1
MAX_LABEL_CHARS = 12
CMAP = "viridis"
# A square-root colour scale: weights spread over many keys (0.01–0.1) stay visible next to a 1.0.
GAMMA = 0.5
# Whitespace made visible, and every other control character as its Unicode "control picture" (\x07 → ␇), which
# the font has: a raw one draws as nothing, with a warning on stderr.
VISIBLE_WHITESPACE = str.maketrans(
    {" ": "·", "\n": "↵", "\t": "→", 0x7F: "␡", **{c: chr(0x2400 + c) for c in range(32) if chr(c) not in "\n\t"}}
)
IMPORTANCE_CELL_INCHES = 0.6
IMPORTANCE_MARGINS = (0.7, 0.6, 0.2)  # left (layer labels), bottom (head labels), top (above the title)
IMPORTANCE_MIN_WIDTH = 5.0  # room for the title
TITLE_LINE_INCHES = 0.2
TITLE_CHARS_PER_INCH = 14  # at 9 pt
SMALL_CELL_INCHES = 0.3  # a score grid wider than 16 columns: no values printed
IMPORTANCE_CMAP = "RdBu_r"  # red: the loss rises without the head; blue: it falls; white: no change


@dataclass
class Panels:
    """Heatmaps to draw: `maps[r, c]` is the (T, T) map of layer `rows[r]` and head `cols[c]`."""

    maps: Tensor
    """(n_rows, n_cols, T, T)."""
    rows: list[int]
    """Layer index of each row."""
    cols: list[str]
    """Head name of each column: "0", "1", ... or an aggregate's name ("mean", "rollout")."""


def visible(token: str) -> str:
    """`token` with whitespace made visible (space → ·, newline → ↵, tab → →) and control characters shown."""
    return token.translate(VISIBLE_WHITESPACE)


@contextmanager
def glyphs_unwarned() -> Iterator[None]:
    """Draw without matplotlib's "Glyph N missing from font" warning for each character the font lacks (an emoji,
    a script it does not cover, in a token label): the figure shows a box, and stderr stays the command's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        yield


def label_step(n_tokens: int) -> int:
    """Label every k-th token so that an axis carries at most `MAX_LABELS` labels."""
    return max(1, math.ceil(n_tokens / MAX_LABELS))


def panel_inches(n_tokens: int) -> float:
    """Side of one labelled heatmap: about 0.15 in per token, between 3 and 10 inches."""
    return min(max(3.0, 0.15 * n_tokens), 10.0)


def _grid_size(
    rows: int, cols: int, panel: float, margins: tuple[float, float, float], footer: float = 0.0
) -> tuple[float, float]:
    left, bottom, top = margins
    return cols * (left + panel) + COLORBAR_INCHES, rows * (top + panel + bottom) + footer


def _grid_axes(fig: Figure, rows: int, cols: int, panel: float, margins: tuple[float, float, float]) -> list[Axes]:
    """Square axes in row-major order, each with its own label margins, plus a colorbar axes at the end."""
    left, bottom, top = margins
    width, height = fig.get_size_inches()
    axes = []
    for r in range(rows):
        for c in range(cols):
            x = c * (left + panel) + left
            y = height - (r + 1) * (top + panel + bottom) + bottom
            axes.append(fig.add_axes((x / width, y / height, panel / width, panel / height)))
    axes.append(fig.add_axes(((width - COLORBAR_INCHES + 0.15) / width, 0.2, 0.18 / width, 0.6)))
    return axes


def _layer_grid(n_panels: int) -> tuple[int, int]:
    """(rows, cols) for `n_panels` labelled heatmaps: at most 3 across, rows filled evenly (4 → 2×2)."""
    rows = math.ceil(n_panels / 3)
    return rows, math.ceil(n_panels / rows)


def layer_figure_size(n_panels: int, n_tokens: int) -> tuple[float, float]:
    """(width, height) in inches of a labelled figure with `n_panels` heatmaps."""
    return _grid_size(*_layer_grid(n_panels), panel_inches(n_tokens), LAYER_MARGINS)


def overview_figure_size(n_rows: int, n_cols: int) -> tuple[float, float]:
    """(width, height) in inches of the overview grid."""
    return _grid_size(n_rows, n_cols, OVERVIEW_PANEL_INCHES, OVERVIEW_MARGINS, OVERVIEW_FOOTER)


def column_title(col: str) -> str:
    """"head 3" for a head, the aggregate's own name ("mean", "rollout") otherwise."""
    return f"head {col}" if col.isdigit() else col


def _norm() -> PowerNorm:
    return PowerNorm(gamma=GAMMA, vmin=0.0, vmax=1.0)


def overview_figure(panels: Panels) -> Figure:
    """One row per layer, one column per head, unlabelled tokens, one shared colour scale and colorbar."""
    n_rows, n_cols = len(panels.rows), len(panels.cols)
    fig = Figure(figsize=overview_figure_size(n_rows, n_cols), dpi=DPI)
    *axes, cax = _grid_axes(fig, n_rows, n_cols, OVERVIEW_PANEL_INCHES, OVERVIEW_MARGINS)
    norm = _norm()
    for i, ax in enumerate(axes):
        r, c = divmod(i, n_cols)
        image = ax.imshow(panels.maps[r, c].numpy(), cmap=CMAP, norm=norm, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
            ax.set_title(column_title(panels.cols[c]), fontsize=9)
        if c == 0:
            ax.set_ylabel(f"layer {panels.rows[r]}\nquery ↓", fontsize=9)
        if r == n_rows - 1:
            ax.set_xlabel("key →", fontsize=9)
    fig.colorbar(image, cax=cax, label="attention weight")
    return fig


def layer_figure(maps: Tensor, titles: Sequence[str], tokens: Sequence[str]) -> Figure:
    """Large heatmaps (n, T, T) with their titles and visible-whitespace token labels on both axes."""
    n, T = maps.size(0), maps.size(-1)
    fig = Figure(figsize=layer_figure_size(n, T), dpi=DPI)
    *axes, cax = _grid_axes(fig, *_layer_grid(n), panel_inches(T), LAYER_MARGINS)
    ticks = list(range(0, T, label_step(T)))
    labels = [visible(tokens[i])[:MAX_LABEL_CHARS] for i in ticks]
    fontsize = 7 if T > 24 else 9
    norm = _norm()
    for ax, heatmap, title in zip(axes, maps, titles):
        image = ax.imshow(heatmap.numpy(), cmap=CMAP, norm=norm, interpolation="nearest")
        ax.set_title(title, fontsize=11)
        ax.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks, labels, fontsize=fontsize)
        ax.set_xlabel("key token")
        ax.set_ylabel("query token")
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.colorbar(image, cax=cax, label="attention weight")
    return fig


def importance_figure_size(n_layer: int, n_head: int, title_lines: int = 2) -> tuple[float, float]:
    """(width, height) in inches of the layer × head importance grid under a title of `title_lines` lines."""
    return _score_grid_size(n_layer, n_head, IMPORTANCE_CELL_INCHES, title_lines)


def _score_grid_size(n_rows: int, n_cols: int, cell: float, title_lines: int) -> tuple[float, float]:
    left, bottom, top = IMPORTANCE_MARGINS
    width = max(IMPORTANCE_MIN_WIDTH, left + n_cols * cell + COLORBAR_INCHES)
    return width, bottom + n_rows * cell + top + TITLE_LINE_INCHES * title_lines


def importance_figure(loss_change: Tensor, title: str) -> Figure:
    """One cell per head (layers down, heads across) showing `loss_change` (n_layer, n_head), each printed with
    its value, on a colour scale centred on 0; `title` is wrapped to the figure's width."""
    n_layer, n_head = loss_change.shape
    return score_grid_figure(loss_change, title, [str(l) for l in range(n_layer)], [str(h) for h in range(n_head)])


def score_grid_figure(
    values: Tensor, title: str, rows: Sequence[str], cols: Sequence[str], *, xlabel: str = "head",
    ylabel: str = "layer", label: str = "nats/token", limit: float = 0.0, fmt: str = "{:+.3f}",
) -> Figure:  # fmt: skip
    """A grid of signed scores (len(rows), len(cols)) on a red-white-blue scale centred on 0 that reaches at least
    `limit`, each cell printed with its value (`fmt`) while the grid is narrow enough; `title` wrapped to the width."""
    n_rows, n_cols = values.shape
    cell = IMPORTANCE_CELL_INCHES if n_cols <= 16 else SMALL_CELL_INCHES
    left, bottom, _ = IMPORTANCE_MARGINS
    width, _ = _score_grid_size(n_rows, n_cols, cell, 2)
    lines = textwrap.wrap(title, width=int(width * TITLE_CHARS_PER_INCH))
    width, height = _score_grid_size(n_rows, n_cols, cell, len(lines))
    fig = Figure(figsize=(width, height), dpi=DPI)
    grid_w, grid_h = n_cols * cell / width, n_rows * cell / height
    ax = fig.add_axes((left / width, bottom / height, grid_w, grid_h))
    cax = fig.add_axes(((left + n_cols * cell + 0.2) / width, bottom / height, 0.18 / width, grid_h))
    data = values.double().numpy()
    limit = max(limit, float(np.nanmax(np.abs(data), initial=0.0))) or 1.0
    image = ax.imshow(data, cmap=IMPORTANCE_CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
    if n_cols <= 16:
        for (r, c), value in np.ndenumerate(data):
            ink = "white" if abs(value) > 0.6 * limit else "black"
            ax.text(c, r, fmt.format(value), ha="center", va="center", fontsize=7, color=ink)
    ax.set_xticks(range(n_cols), list(cols), rotation=0 if n_cols <= 16 else 90)
    ax.set_yticks(range(n_rows), list(rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.text(0.1 / width, 1 - 0.1 / height, "\n".join(lines), fontsize=9, va="top")
    fig.colorbar(image, cax=cax, label=label)
    return fig


def figure_pixels(fig: Figure) -> np.ndarray:
    """The rendered figure as an (H, W, 3) uint8 array (for TensorBoard's `add_image`)."""
    canvas = FigureCanvasAgg(fig)
    with glyphs_unwarned():
        canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def layer_pixels(maps: Tensor, titles: Sequence[Sequence[str]], tokens: Sequence[str]) -> Iterator[np.ndarray]:
    """The (H, W, 4) RGBA pixels of `layer_figure(maps[i], titles[i], tokens)` for each i, the same to the byte,
    drawn from one `LayerCanvas`."""
    if not len(maps):
        return
    canvas = LayerCanvas(maps[0], titles[0], tokens)
    for heatmaps, names in zip(maps, titles):
        yield canvas.pixels(heatmaps, names)


class LayerCanvas:
    """A labelled layer figure (`layer_figure`) laid out and drawn once, then redrawn for any maps of the same
    shape: its tick labels, most of a figure's cost, are drawn once; each figure redraws only its heatmaps, what
    lies on them (tick and grid lines, spines) and its titles. The pixels are those of a fresh figure."""

    def __init__(self, maps: Tensor, titles: Sequence[str], tokens: Sequence[str]) -> None:
        self.shape, self.tokens = tuple(maps.shape), list(tokens)
        fig = layer_figure(maps, titles, tokens)
        self._canvas = FigureCanvasAgg(fig)
        self._panels = [ax for ax in fig.axes if ax.images]
        # Each panel's artists that lie on its heatmap, in the order Axes.draw draws them, are left out of the
        # background; its title is emptied instead (a hidden title would be moved by Axes.draw).
        self._redrawn = [_drawn_over(ax) for ax in self._panels]
        for artist in (a for group in self._redrawn for a in group):
            artist.set_visible(False)
        for ax in self._panels:
            ax.title.set_text("")
        with glyphs_unwarned():
            self._canvas.draw()
        self._background = self._canvas.copy_from_bbox(fig.bbox)
        for artist in (a for group in self._redrawn for a in group):
            artist.set_visible(True)

    def fits(self, maps: Tensor, tokens: Sequence[str]) -> bool:
        """True when `maps` and `tokens` can be drawn on this canvas: the same shape and labels."""
        return tuple(maps.shape) == self.shape and list(tokens) == self.tokens

    def pixels(self, maps: Tensor, titles: Sequence[str]) -> np.ndarray:
        """The (H, W, 4) RGBA pixels of `layer_figure(maps, titles, tokens)`."""
        self._canvas.restore_region(self._background)
        for ax, group, heatmap, name in zip(self._panels, self._redrawn, maps, titles):
            ax.images[0].set_data(heatmap.numpy())
            ax.title.set_text(name)
            with glyphs_unwarned():
                for artist in group:
                    ax.draw_artist(artist)
                ax.draw_artist(ax.title)
        return np.asarray(self._canvas.buffer_rgba()).copy()


def _drawn_over(ax: Axes) -> list[Artist]:
    """`ax`'s heatmap, spines and visible tick and grid lines, sorted as `Axes.draw` sorts its children."""
    lines = {
        axis: [line for tick in axis.get_major_ticks() for line in (tick.gridline, tick.tick1line, tick.tick2line)
               if line.get_visible()]
        for axis in (ax.xaxis, ax.yaxis)
    }  # fmt: skip
    drawn = [*ax.images, *ax.spines.values()]
    ordered = sorted((child for child in ax.get_children() if child in drawn or child in lines), key=lambda a: a.get_zorder())
    return [line for child in ordered for line in lines.get(child, [child])]


def save(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG at `path`."""
    with glyphs_unwarned():
        FigureCanvasAgg(fig).print_png(path)
    return path


def save_pixels(pixels: np.ndarray, path: Path) -> Path:
    """Write RGBA `pixels` of a figure as a PNG at `path`, the file `save` writes for that figure."""
    imsave(path, pixels, format="png", origin="upper", dpi=DPI)
    return path


def write_pngs(out_dir: Path, panels: Panels, tokens: Sequence[str], per_head: bool) -> list[Path]:
    """`overview.png` plus `layer_{l}.png` (all columns of a row) or, with `per_head`, `layer_{l}_head_{h}.png`."""
    written = [save(overview_figure(panels), out_dir / "overview.png")]
    titles = [[f"layer {layer} · {column_title(head)}" for head in panels.cols] for layer in panels.rows]
    if per_head:
        maps = panels.maps.flatten(0, 1).unsqueeze(1)  # one single-panel figure per head
        titles = [[title] for row in titles for title in row]
        names = [f"layer_{layer}_head_{head}.png" for layer in panels.rows for head in panels.cols]
    else:
        maps, names = panels.maps, [f"layer_{layer}.png" for layer in panels.rows]
    for name, pixels in zip(names, layer_pixels(maps, titles, tokens)):
        written.append(save_pixels(pixels, out_dir / name))
    return written
