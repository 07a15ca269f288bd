"""Drawing the labelled per-layer attention figures: one fresh figure per layer against `heatmaps.layer_pixels`,
which lays the figure out once and redraws only each layer's heatmaps (the same pixels, tested), and a later
view of a training run, whose `heatmaps.LayerCanvas` is already laid out.

Both draw `layers` figures of `heads` heatmaps over a `tokens`-token probe, as the training view and
`minigpt attention` do, alternating for several rounds; the ratio of the medians is reported.
Usage: python bench/bench_views.py [--layers 2 6 12] [--heads 4] [--tokens 48] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from minigpt.inspection import heatmaps


def fresh(maps: torch.Tensor, titles: list[list[str]], tokens: list[str]) -> None:
    for layer_maps, layer_titles in zip(maps, titles):
        heatmaps.figure_pixels(heatmaps.layer_figure(layer_maps, layer_titles, tokens))


def redrawn(maps: torch.Tensor, titles: list[list[str]], tokens: list[str]) -> None:
    for _ in heatmaps.layer_pixels(maps, titles, tokens):
        pass


def later_view(canvas: heatmaps.LayerCanvas, maps: torch.Tensor, titles: list[list[str]]) -> None:
    for layer_maps, layer_titles in zip(maps, titles):
        canvas.pixels(layer_maps, layer_titles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 6, 12])
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    tokens = [chr(97 + i % 26) * (1 + i % 3) for i in range(args.tokens)]
    for layers in args.layers:
        maps = torch.softmax(torch.randn(layers, args.heads, args.tokens, args.tokens), -1).tril()
        titles = [[f"layer {layer} · head {head}" for head in range(args.heads)] for layer in range(layers)]
        canvas = heatmaps.LayerCanvas(maps[0], titles[0], tokens)
        sides = {"fresh": lambda: fresh(maps, titles, tokens), "redrawn": lambda: redrawn(maps, titles, tokens),
                 "later": lambda: later_view(canvas, maps, titles)}  # fmt: skip
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.rounds):  # alternating, so machine noise hits all alike
            for name, draw in sides.items():
                start = time.perf_counter()
                draw()
                seconds[name].append(time.perf_counter() - start)
        a, b, c = (statistics.median(seconds[name]) for name in sides)
        print(f"{layers:3d} layers x {args.heads} heads, {args.tokens} tokens: a figure per layer {a:6.2f} s, "
              f"laid out once {b:6.2f} s (ratio {a / b:.2f}), a later view {c:6.2f} s (ratio {a / c:.1f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
