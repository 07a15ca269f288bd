"""Attention maps as files: PNG heatmaps (matplotlib, Agg), one self-contained HTML page, raw .npz, heads.json.

Every heatmap puts query tokens down and key tokens across, on one shared colour scale.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.axes import Axes
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from torch import Tensor

from minigpt.attention import HeadStats, top_heads

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
VISIBLE_WHITESPACE = str.maketrans({" ": "·", "\n": "↵", "\t": "→"})

HEAD_STAT_DEFINITIONS = {
    "entropy": "mean entropy (nats) of the head's attention rows on the prompt",
    "previous_token": "mean weight on position i-1 over queries i >= 1 on the prompt",
    "first_token": "mean weight on position 0 (attention sink) over queries i >= 1 on the prompt",
    "induction": "on random tokens repeated twice: mean weight on the token after the previous occurrence "
    "of the current token, over the second half",
}


@dataclass
class Panels:
    """Heatmaps to draw: `maps[r, c]` is the (T, T) map of layer `rows[r]` and head `cols[c]`."""

    maps: Tensor
    """(n_rows, n_cols, T, T)."""
    rows: list[int]
    """Layer index of each row."""
    cols: list[str]
    """Head name of each column: "0", "1", ... or an aggregate's name ("mean", "rollout")."""


def token_strings(enc: tiktoken.Encoding, ids: Sequence[int]) -> list[str]:
    """Each token decoded on its own (a partial UTF-8 character shows as �)."""
    return [enc.decode_single_token_bytes(i).decode("utf-8", errors="replace") for i in ids]


def visible(token: str) -> str:
    """`token` with whitespace made visible: space → ·, newline → ↵, tab → →."""
    return token.translate(VISIBLE_WHITESPACE)


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


def figure_pixels(fig: Figure) -> np.ndarray:
    """The rendered figure as an (H, W, 3) uint8 array (for TensorBoard's `add_image`)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig).print_png(path)
    return path


def write_pngs(out_dir: Path, panels: Panels, tokens: Sequence[str], per_head: bool) -> list[Path]:
    """`overview.png` plus `layer_{l}.png` (all columns of a row) or, with `per_head`, `layer_{l}_head_{h}.png`."""
    written = [_save(overview_figure(panels), out_dir / "overview.png")]
    for r, layer in enumerate(panels.rows):
        titles = [f"layer {layer} · {column_title(head)}" for head in panels.cols]
        if per_head:
            for c, head in enumerate(panels.cols):
                fig = layer_figure(panels.maps[r, c : c + 1], titles[c : c + 1], tokens)
                written.append(_save(fig, out_dir / f"layer_{layer}_head_{head}.png"))
        else:
            written.append(_save(layer_figure(panels.maps[r], titles, tokens), out_dir / f"layer_{layer}.png"))
    return written


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


def heads_record(stats: HeadStats, top: int) -> dict:
    """Plain data for heads.json: definitions, one record per head, and the `top` heads of each kind."""
    kinds = stats.kinds()
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
    return {"definitions": HEAD_STAT_DEFINITIONS, "heads": heads, "top": ranked}


def write_heads_json(path: Path, stats: HeadStats, top: int) -> Path:
    """heads.json: see `heads_record`."""
    path.write_text(json.dumps(heads_record(stats, top), indent=2) + "\n", encoding="utf-8")
    return path


def html_data(panels: Panels, tokens: Sequence[str], stats: HeadStats) -> dict:
    """The JSON embedded in attention.html; weights rounded to 5 decimals to keep the page small.

    `stats` holds each kind's scores of every head as [layer][head] lists (null where undefined).
    """
    return {
        "tokens": list(tokens),
        "layers": panels.rows,
        "heads": panels.cols,
        "weights": np.round(panels.maps.numpy().astype(np.float64), 5).tolist(),
        "stats": {
            kind: [[_json_number(float(x)) for x in row] for row in scores] for kind, scores in stats.kinds().items()
        },
    }


def write_html(path: Path, panels: Panels, tokens: Sequence[str], stats: HeadStats) -> Path:
    """One self-contained page (inline CSS/JS, data as embedded JSON, no network) to explore `panels`."""
    data = json.dumps(html_data(panels, tokens, stats), separators=(",", ":"), ensure_ascii=False)
    # A token such as "</script>" must not close the data block early.
    data = data.replace("</", "<\\/")
    path.write_text(_PAGE.replace("/*ATTENTION_DATA*/", data), encoding="utf-8")
    return path


# The page reads its data from the JSON block, draws the chosen map on a canvas and shades the token strip
# with the chosen query's row. It publishes what it shows as data-* attributes on <body> (layer, head,
# query, checksum) so a headless browser test can check it.
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>minigpt attention</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 16px; color: #222; background: #fff; }
  header { display: flex; gap: 16px; align-items: center; flex-wrap: wrap; margin-bottom: 12px; }
  select { font-size: 14px; padding: 2px 4px; }
  #stats { font-size: 13px; color: #444; }
  #info { font-family: ui-monospace, monospace; font-size: 13px; min-height: 1.4em; margin: 8px 0; }
  #tokens { font-family: ui-monospace, monospace; font-size: 14px; line-height: 1.9; max-width: 1000px; }
  #tokens span { padding: 1px 1px; margin: 0 1px; border-radius: 3px; cursor: pointer; white-space: pre; }
  #tokens span.query { outline: 2px solid #e0115f; }
  #tokens span.future { color: #bbb; }
  canvas { display: block; margin: 8px 0; cursor: crosshair; }
  .hint { color: #666; font-size: 13px; }
</style>
</head>
<body>
<header>
  <label>Layer <select id="layer"></select></label>
  <label>Head <select id="head"></select></label>
  <span id="stats"></span>
  <span class="hint">hover a token or a heatmap row to see what it attends to; click to pin</span>
</header>
<div id="tokens"></div>
<div id="info"></div>
<canvas id="heatmap"></canvas>
<script id="attention-data" type="application/json">/*ATTENTION_DATA*/</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("attention-data").textContent);
const T = data.tokens.length;
const layerSelect = document.getElementById("layer");
const headSelect = document.getElementById("head");
const canvas = document.getElementById("heatmap");
const ctx = canvas.getContext("2d");
const info = document.getElementById("info");
const tokenBox = document.getElementById("tokens");
const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
                 [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
const GAMMA = 0.5;  // the same square-root scale as the PNGs
const cell = Math.max(2, Math.min(24, Math.floor(720 / T)));
const margin = cell >= 9 ? 90 : 0;  // room for token labels when cells are tall enough to carry them
let query = T - 1;
let pinned = false;

const visible = (s) => s.replace(/ /g, "\\u00b7").replace(/\\n/g, "\\u21b5").replace(/\\t/g, "\\u2192");

function colour(w) {
  const t = Math.pow(Math.min(Math.max(w, 0), 1), GAMMA) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(t), VIRIDIS.length - 2);
  const f = t - i;
  const rgb = VIRIDIS[i].map((a, k) => Math.round(a + f * (VIRIDIS[i + 1][k] - a)));
  return `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
}

function currentMap() {
  return data.weights[layerSelect.selectedIndex][headSelect.selectedIndex];
}

function drawHeatmap(map) {
  canvas.width = margin + T * cell;
  canvas.height = margin + T * cell;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < T; i++) {
    for (let j = 0; j < T; j++) {
      ctx.fillStyle = colour(map[i][j]);
      ctx.fillRect(margin + j * cell, margin + i * cell, cell, cell);
    }
  }
  if (margin) {
    ctx.fillStyle = "#222";
    ctx.font = `${Math.min(cell - 1, 12)}px monospace`;
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    data.tokens.forEach((tok, i) => {
      ctx.fillText(visible(tok).slice(0, 10), margin - 4, margin + (i + 0.5) * cell);
      ctx.save();
      ctx.translate(margin + (i + 0.5) * cell, margin - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillText(visible(tok).slice(0, 10), 0, 0);
      ctx.restore();
    });
  }
  ctx.strokeStyle = "#e0115f";
  ctx.lineWidth = 2;
  ctx.strokeRect(margin, margin + query * cell, T * cell, cell);
}

function describe(map) {
  const row = map[query].map((w, j) => [w, j]).slice(0, query + 1).sort((a, b) => b[0] - a[0]).slice(0, 5);
  const top = row.map(([w, j]) => `"${visible(data.tokens[j])}"#${j} ${w.toFixed(3)}`).join(", ");
  info.textContent = `query "${visible(data.tokens[query])}"#${query} attends to: ${top}`;
}

function shadeTokens(map) {
  tokenBox.querySelectorAll("span").forEach((span, j) => {
    const w = j <= query ? map[query][j] : 0;
    span.style.background = j <= query ? colour(w) : "transparent";
    span.style.color = j > query ? "" : Math.pow(w, GAMMA) > 0.6 ? "#000" : "#fff";
    span.classList.toggle("query", j === query);
    span.classList.toggle("future", j > query);
    span.title = `#${j} weight ${w.toFixed(4)}`;
  });
}

function render() {
  const map = currentMap();
  drawHeatmap(map);
  shadeTokens(map);
  describe(map);
  showStats();
  let checksum = 0;
  for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) checksum += map[i][j] * (i + 1) * (j + 1);
  Object.assign(document.body.dataset, {
    layer: layerSelect.value, head: headSelect.value, query, checksum,
  });
}

function showStats() {
  // Head statistics exist for real heads only, not for an aggregate such as "mean".
  const layer = +layerSelect.value, head = +headSelect.value;
  const rows = Number.isInteger(head) ? Object.entries(data.stats) : [];
  const score = (x) => (x === null ? "-" : x.toFixed(3));
  document.getElementById("stats").textContent = rows
    .map(([kind, table]) => `${kind.replace("_", "-")} ${score(table[layer][head])}`)
    .join(" \\u00b7 ");
}

function setQuery(i, pin) {
  if (pin) pinned = !(pinned && i === query);
  else if (pinned) return;
  query = i;
  render();
}

// Option values are the layer numbers and head names themselves; the maps are found by position.
data.layers.forEach((l) => layerSelect.add(new Option(`layer ${l}`, l)));
data.heads.forEach((h) => headSelect.add(new Option(/^\\d+$/.test(h) ? `head ${h}` : h, h)));
data.tokens.forEach((tok, j) => {
  const span = document.createElement("span");
  span.textContent = visible(tok);
  span.addEventListener("mouseenter", () => setQuery(j, false));
  span.addEventListener("click", () => setQuery(j, true));
  tokenBox.appendChild(span);
  if (tok.includes("\\n")) tokenBox.appendChild(document.createElement("br"));
});
function rowAt(event) {
  const i = Math.floor((event.offsetY - margin) / cell);
  const j = Math.floor((event.offsetX - margin) / cell);
  return i >= 0 && i < T && j >= 0 && j < T ? i : -1;
}
canvas.addEventListener("mousemove", (e) => { const i = rowAt(e); if (i >= 0) setQuery(i, false); });
canvas.addEventListener("click", (e) => { const i = rowAt(e); if (i >= 0) setQuery(i, true); });
layerSelect.addEventListener("change", render);
headSelect.addEventListener("change", render);
render();
document.body.dataset.ready = "true";
</script>
</body>
</html>
"""
