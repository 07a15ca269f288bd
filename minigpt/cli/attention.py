"""Attention maps of a prompt, written as files.

``minigpt attention --ckpt RUN --prompt "..." --out DIR`` (or ``python -m minigpt.cli.attention``)

The options and their translation into `minigpt.inspection.report` calls (`report_attention`) also
serve ``minigpt generate --attention DIR``; matplotlib is imported only when maps are actually written, so
sampling stays fast to start.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from minigpt import tokenizer as tok
from minigpt.api import MiniGPT, load
from minigpt.cli import run
from minigpt.cli.common import (
    CKPT_HELP,
    OneLineParser,
    add_device_argument,
    canonical_options,
    positive_int,
    resolve_device,
    utf8_text,
)
from minigpt.cli.stdout import check_stdout_open, writing_stdout
from minigpt.errors import MiniGPTError, check_lookup
from minigpt.folders import refuse_dangling_link
from minigpt.inspection import ablation
from minigpt.inspection import maps as attention
from minigpt.inspection.ablation import DEFAULT_WINDOWS, Importance, Windows
from minigpt.inspection.lens import DEFAULT_TOP, LogitLens
from minigpt.inspection.patching import Patching
from minigpt.model import GPTConfig

if TYPE_CHECKING:
    from minigpt.inspection.attention import Attention

logger = logging.getLogger(__name__)

STAT_TITLES = {
    "previous_token": "previous-token heads",
    "first_token": "first-token (sink) heads",
    "induction": "induction heads",
    "entropy": "most focused heads (lowest entropy, nats)",
}
IMPORTANCE_TITLE = "heads the loss needs most (rise when zeroed, nats/token)"


def add_attention_arguments(
    parser: argparse.ArgumentParser, out_flag: str = "--attention", required: bool = False
) -> None:
    """Add the attention-map options; the output folder is `out_flag` (stored as ``args.attention_dir``)."""
    group = parser.add_argument_group("attention maps")
    group.add_argument(
        out_flag, dest="attention_dir", metavar="OUT_DIR", type=Path, required=required,
        help="write attention maps (overview.png, layer_*.png, attention.html, attention.npz, heads.json) here",
    )  # fmt: skip
    group.add_argument(
        "--ablate", action="store_true",
        help="also measure each head's importance: the loss change on the text when its output is zeroed "
        "(heads.json, importance.png, the page)",
    )  # fmt: skip
    group.add_argument(
        "--data", metavar="SPEC",
        help="with --ablate: measure importance on the validation text the checkpoint's run held out of this "
        "corpus (as `minigpt eval --split val`) instead of on the text drawn",
    )  # fmt: skip
    group.add_argument(
        "--ablate_windows", type=positive_int, metavar="N",
        help=f"with --data: how many windows of the validation text, spread evenly (default {DEFAULT_WINDOWS})",
    )  # fmt: skip
    group.add_argument("--layers", help="comma-separated layers to draw, e.g. 0,2 (default: all)")
    group.add_argument("--heads", help="comma-separated heads to draw or aggregate, e.g. 1 (default: all)")
    group.add_argument(
        "--aggregate", choices=attention.AGGREGATES,
        help="draw one map per layer instead of one per head: mean over heads, or attention rollout through layers",
    )  # fmt: skip
    group.add_argument("--per_head", action="store_true", help="one PNG per head (layer_L_head_H.png), not per layer")
    group.add_argument(
        "--top_heads", type=positive_int, default=3, help="how many heads of each kind to print (>= 1; default: 3)"
    )


def check_out_dir(path: Path) -> None:
    """Raise `MiniGPTError` unless `path` is, or can be made as, a folder we may write into; creates nothing."""
    check_lookup(path, "the attention folder", "choose another --out")
    refuse_dangling_link(path, "cannot write attention maps to")
    # The nearest part of the path that exists decides: it must be a folder, and writable.
    existing = path
    while not os.path.exists(existing) and existing != existing.parent:
        existing = existing.parent
    # Paths are quoted with repr: a newline in one must not break the one-line message.
    if not os.path.isdir(existing):
        where = "it is" if existing == path else f"{str(existing)!r} is"
        raise MiniGPTError(f"cannot write attention maps to {str(path)!r}: {where} a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MiniGPTError(f"cannot write attention maps to {str(path)!r}: {str(existing)!r} is not writable")


def parse_indices(text: str | None, count: int, what: str) -> list[int]:
    """'0,2' → [0, 2], checked against range(count); None → every index."""
    if text is None:
        return list(range(count))
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise MiniGPTError(f"bad --{what} {text!r}: write comma-separated numbers, e.g. --{what} 0,2") from None
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise MiniGPTError(
            f"--{what} {','.join(map(str, indices))}: the model has {count} {what} (0 to {count - 1}), "
            f"so {bad[0]} is out of range"
        )
    return list(dict.fromkeys(indices))


def selected_layers_and_heads(args: argparse.Namespace, config: GPTConfig) -> tuple[list[int], list[int]]:
    """The --layers and --heads chosen, checked against the model (so bad ones fail before any sampling)."""
    return parse_indices(args.layers, config.n_layer, "layers"), parse_indices(args.heads, config.n_head, "heads")


def report_attention(
    args: argparse.Namespace, lm: MiniGPT, text: str, ablate_on: Windows | None = None, text_name: str = "the prompt"
) -> None:
    """Write the attention report of `text` into ``args.attention_dir`` (`MiniGPT.attention`, then `save`) and print
    the top heads. With --ablate, head importance is measured on `ablate_on`, by default on `text` itself (called
    `text_name`)."""
    save_and_print(args, analysed(args, lm, text, ablate_on, text_name))


def analysed(
    args: argparse.Namespace, lm: MiniGPT, text: str, ablate_on: Windows | None = None, text_name: str = "the prompt"
) -> Attention:
    """The attention of `text` as the report options ask for it (see `report_attention`)."""
    ids = tok.encode(lm.tokenizer, text)
    if not ids:
        raise MiniGPTError("the prompt is empty: pass some text with --prompt")
    layers, heads = selected_layers_and_heads(args, lm.config)
    att = lm.attention(text, layers=layers, heads=heads, aggregate=args.aggregate)
    if args.ablate:
        att = att.ablate_on(ablate_on or ablation.text_windows(ids, lm.config.block_size, text_name))
    return att


def save_and_print(args: argparse.Namespace, att: Attention) -> None:
    """Write `att`'s files into ``args.attention_dir`` and print the top heads (and importance, lens, patching)."""
    # check_out_dir ran before sampling, but the folder can change meanwhile, or the disk fill up.
    att.save(args.attention_dir, per_head=args.per_head, top=args.top_heads)
    logger.info("wrote the attention maps of %d tokens to %s", len(att.tokens), args.attention_dir)
    print_top_heads(att.analysis.stats, args.top_heads)
    if att.analysis.importance is not None:
        print_importance(att.analysis.importance, args.top_heads)
    if att.lens is not None:
        print_lens(att.lens)
    if att.patching is not None:
        print_patching(att.patching, args.top_heads)


def print_top_heads(stats: attention.HeadStats, k: int) -> None:
    """The CLI's stdout: the `k` strongest heads of each kind, e.g. ``induction heads: L1H0 0.41, ...``."""
    for kind, scores in stats.kinds().items():
        best = attention.top_heads(scores, k, largest=kind != "entropy")
        shown = ", ".join(f"L{l}H{h} {s:.3f}" for l, h, s in best) or "n/a (too few tokens to measure)"
        print(f"{STAT_TITLES[kind]}: {shown}")


def print_importance(importance: Importance, k: int) -> None:
    """The `k` heads whose removal raises the loss most, e.g. ``heads the loss needs most (...): L1H0 +0.412``."""
    best = attention.top_heads(importance.loss_change, k)
    print(f"{IMPORTANCE_TITLE}: " + ", ".join(f"L{l}H{h} {s:+.3f}" for l, h, s in best))
    print(f"  on {importance.source}: {importance.tokens:,} tokens, loss {importance.base_loss:.4f} with every head")


def print_lens(lens: LogitLens) -> None:
    """The top next token after every block at the last position, e.g. ``logit lens at the last position (...):
    embed 'a' 0.031 | block 0 ' ' 0.412 | block 1 ' ' 0.655``."""
    last = " | ".join(f"{name} {row[-1][0]!r} {float(p[-1, 0]):.3f}" for name, row, p in zip(lens.layers, lens.top, lens.probs))
    print(f"logit lens at the last position ({lens.tokens[-1]!r}), top next token after: {last}")


def print_patching(patching: Patching, k: int) -> None:
    """The `k` heads whose output restores most of the clean-vs-corrupt difference, and the residual stream
    position that restores most after each block."""
    print(
        f"activation patching, share of {patching.metric} restored (clean {patching.clean:.3f}, "
        f"corrupt {patching.corrupt:.3f}):"
    )
    print("  heads: " + ", ".join(f"L{l}H{h} {s:.3f}" for l, h, s in attention.top_heads(patching.heads, k)))
    best = patching.residual.argmax(dim=1)
    print(
        "  residual, best position after: "
        + ", ".join(f"{name} #{int(i)} {float(row[i]):.3f}" for name, row, i in zip(patching.layers, patching.residual, best))
    )


def build_parser() -> argparse.ArgumentParser:
    """The attention command's options."""
    parser = OneLineParser(
        prog="minigpt attention",
        description="Draw the attention maps of every layer and head of a checkpoint on a prompt.",
    )
    parser.add_argument("--ckpt", required=True, help=CKPT_HELP)
    parser.add_argument("--prompt", required=True, type=utf8_text, help="text whose attention maps to draw")
    add_device_argument(parser)
    add_attention_arguments(parser, out_flag="--out", required=True)
    group = parser.add_argument_group("logit lens and activation patching")
    group.add_argument(
        "--logit_lens", type=positive_int, nargs="?", const=DEFAULT_TOP, metavar="K",
        help=f"also read the K most likely next tokens (default {DEFAULT_TOP}) out of the residual stream after every "
        "block, at every position (logit_lens.png, the page)",
    )  # fmt: skip
    group.add_argument(
        "--corrupt", metavar="TEXT", type=utf8_text,
        help="also patch activations from --prompt (the clean text) into this text of as many tokens, one at a time, "
        "and measure how much of the difference each restores (heads.json, patching_*.png, the page); needs --answer",
    )  # fmt: skip
    group.add_argument(
        "--answer", metavar="TOKEN", type=utf8_text, help="with --corrupt: the one token whose logit at the last position is measured"
    )
    group.add_argument(
        "--wrong", metavar="TOKEN", type=utf8_text,
        help="with --corrupt: measure the answer's logit minus this token's (default: minus the mean logit)",
    )  # fmt: skip
    return parser


def check_ablation_options(args: argparse.Namespace) -> None:
    """--data and --ablate_windows only mean something with --ablate (and --ablate_windows with --data)."""
    if args.data is not None and not args.ablate:
        raise MiniGPTError("--data names the text to measure head importance on: add --ablate")
    if args.ablate_windows is not None and args.data is None:
        raise MiniGPTError("--ablate_windows counts windows of the --data corpus: add --data SPEC, or drop it")


def check_patching_options(args: argparse.Namespace) -> None:
    """--corrupt needs --answer; --answer and --wrong only mean something with --corrupt."""
    if args.corrupt is not None and args.answer is None:
        raise MiniGPTError("--corrupt needs --answer TOKEN: the token whose logit the patching measures")
    for flag in ("answer", "wrong"):
        if getattr(args, flag) is not None and args.corrupt is None:
            raise MiniGPTError(f"--{flag} is the token measured when patching: add --corrupt TEXT, or drop it")


def validation_windows(args: argparse.Namespace, loaded: MiniGPT) -> Windows:
    """The validation windows that `loaded`'s run held out of the --data corpus, to measure head importance on;
    a corpus that cannot be read is a one-line error naming --data."""
    most, block_size = args.ablate_windows or DEFAULT_WINDOWS, loaded.model.config.block_size
    try:
        return ablation.corpus_windows(args.data, loaded.tokenizer, block_size, loaded.val_fraction, most)
    except MiniGPTError as err:
        raise MiniGPTError(f"--data {args.data!r}: {err}") from None


def check_patching_length(prompt: str, loaded: MiniGPT) -> None:
    """Patching reads the whole --prompt: it must fit the model's context."""
    tokens, block_size = len(tok.encode(loaded.tokenizer, prompt)), loaded.model.config.block_size
    if tokens > block_size:
        raise MiniGPTError(
            f"--prompt has {tokens} tokens; patching reads at most {block_size} (the context): shorten it and --corrupt"
        )


def load_for_report(args: argparse.Namespace, device: torch.device) -> tuple[MiniGPT, Windows | None]:
    """--ckpt's model and, with --data, the validation windows to measure head importance on; bad --layers or
    --heads fail as soon as the model is known, before the corpus is read or anything is sampled."""
    loaded = load(args.ckpt, device)
    selected_layers_and_heads(args, loaded.model.config)
    return loaded, validation_windows(args, loaded) if args.data is not None else None


def main(argv: Sequence[str]) -> None:
    """Parse `argv`, load the checkpoint, write the maps of the prompt and print the top heads."""
    args = build_parser().parse_args(canonical_options(argv))  # `--top-heads` works too
    check_stdout_open()
    check_ablation_options(args)
    check_patching_options(args)
    check_out_dir(args.attention_dir)
    loaded, ablate_on = load_for_report(args, resolve_device(args.device))
    if args.corrupt is not None:  # before the maps, which would keep the prompt's last tokens and say so
        check_patching_length(args.prompt, loaded)
    att = analysed(args, loaded, args.prompt, ablate_on)
    lens = att.logit_lens(args.logit_lens) if args.logit_lens else None
    patching = att.patch(args.corrupt, args.answer, wrong=args.wrong) if args.corrupt is not None else None
    with writing_stdout():
        save_and_print(args, att.showing(lens=lens, patching=patching))


if __name__ == "__main__":
    raise SystemExit(run(main))
