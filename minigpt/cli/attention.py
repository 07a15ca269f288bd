"""Attention maps of a prompt, written as files.

``python -m minigpt.cli.attention --ckpt RUN/last.ckpt --prompt "..." --out DIR``

`add_attention_arguments` and `write_attention` also serve ``generate.py --attention DIR``; they import
matplotlib only when maps are actually written, so sampling stays fast to start.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from minigpt import attention, checkpoint
from minigpt import tokenizer as tok
from minigpt.cli import run
from minigpt.errors import MiniGPTError
from minigpt.model import GPTConfig

logger = logging.getLogger(__name__)

STAT_TITLES = {
    "previous_token": "previous-token heads",
    "first_token": "first-token (sink) heads",
    "induction": "induction heads",
    "entropy": "most focused heads (lowest entropy, nats)",
}


def add_attention_arguments(
    parser: argparse.ArgumentParser, out_flag: str = "--attention", required: bool = False
) -> None:
    """Add the attention-map options; the output folder is `out_flag` (stored as ``args.attention_dir``)."""
    group = parser.add_argument_group("attention maps")
    group.add_argument(
        out_flag, dest="attention_dir", metavar="OUT_DIR", type=Path, required=required,
        help="write attention maps (overview.png, layer_*.png, attention.html, attention.npz, heads.json) here",
    )  # fmt: skip
    group.add_argument("--layers", help="comma-separated layers to draw, e.g. 0,2 (default: all)")
    group.add_argument("--heads", help="comma-separated heads to draw or aggregate, e.g. 1 (default: all)")
    group.add_argument(
        "--aggregate", choices=attention.AGGREGATES,
        help="draw one map per layer instead of one per head: mean over heads, or attention rollout through layers",
    )  # fmt: skip
    group.add_argument("--per-head", action="store_true", help="one PNG per head (layer_L_head_H.png), not per layer")
    group.add_argument("--top-heads", type=int, default=3, help="how many heads of each kind to print (default: 3)")


def parse_indices(text: str | None, count: int, what: str) -> list[int]:
    """'0,2' → [0, 2], checked against range(count); None → every index."""
    if text is None:
        return list(range(count))
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise MiniGPTError(f"bad --{what} '{text}': write comma-separated numbers, e.g. --{what} 0,2") from None
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise MiniGPTError(
            f"--{what} {text}: the model has {count} {what} (0 to {count - 1}), so {bad[0]} is out of range"
        )
    return list(dict.fromkeys(indices))


def selected_layers_and_heads(args: argparse.Namespace, config: GPTConfig) -> tuple[list[int], list[int]]:
    """The --layers and --heads chosen, checked against the model (so bad ones fail before any sampling)."""
    return parse_indices(args.layers, config.n_layer, "layers"), parse_indices(args.heads, config.n_head, "heads")


def write_attention(args: argparse.Namespace, loaded: checkpoint.Loaded, ids: list[int]) -> None:
    """Write the maps and head statistics of `ids` into ``args.attention_dir`` and print the top heads."""
    from minigpt import report  # matplotlib is slow to import: only when maps are written

    if not ids:
        raise MiniGPTError("the prompt is empty: pass some text with --prompt")
    layers, heads = selected_layers_and_heads(args, loaded.model.config)
    maps = attention.extract(loaded.model, ids)
    tokens = report.token_strings(loaded.tokenizer, maps.ids)
    selected = maps.weights[:, heads]  # (L, h, T, T)

    aggregates = {args.aggregate: attention.aggregate(selected, args.aggregate)} if args.aggregate else {}
    columns = [str(h) for h in heads]
    if args.aggregate:
        # The PNGs show the aggregate alone; the page offers it beside every selected head.
        png = report.Panels(aggregates[args.aggregate][layers, None], layers, [args.aggregate])
        both = torch.cat([selected[layers], aggregates[args.aggregate][layers, None]], dim=1)
        page = report.Panels(both, layers, [*columns, args.aggregate])
    else:
        png = page = report.Panels(selected[layers], layers, columns)

    out = args.attention_dir
    out.mkdir(parents=True, exist_ok=True)
    stats = attention.head_stats(loaded.model, maps.weights)
    written = [
        *report.write_pngs(out, png, tokens, per_head=args.per_head),
        report.write_html(out / "attention.html", page, tokens, stats),
        report.write_npz(out / "attention.npz", maps.weights, tokens, maps.ids, aggregates),
        report.write_heads_json(out / "heads.json", stats, args.top_heads),
    ]
    logger.info("wrote %d files to %s", len(written), out)
    print_top_heads(stats, args.top_heads)


def print_top_heads(stats: attention.HeadStats, k: int) -> None:
    """The CLI's stdout: the `k` strongest heads of each kind, e.g. ``induction heads: L1H0 0.41, ...``."""
    for kind, scores in stats.kinds().items():
        best = attention.top_heads(scores, k, largest=kind != "entropy")
        print(f"{STAT_TITLES[kind]}: " + ", ".join(f"L{l}H{h} {s:.3f}" for l, h, s in best))


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt.cli.attention",
        description="Draw the attention maps of every layer and head of a checkpoint on a prompt.",
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint file or run folder (RUN_DIR/last.ckpt)")
    parser.add_argument("--prompt", required=True, help="text whose attention maps to draw")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_attention_arguments(parser, out_flag="--out", required=True)
    args = parser.parse_args(argv)
    loaded = checkpoint.load(args.ckpt, args.device)
    write_attention(args, loaded, tok.encode(loaded.tokenizer, args.prompt))


if __name__ == "__main__":
    raise SystemExit(run(main))
