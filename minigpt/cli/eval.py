"""`minigpt eval`: a checkpoint's loss, bits per byte and perplexity on a corpus, every token scored once.

``minigpt eval --ckpt RUN --data SPEC [--split val]`` prints one line. `--split val` scores the validation text
the run held out of that corpus (see `minigpt.evaluate`). Imports no Lightning, so it starts quickly.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from minigpt.api import load
from minigpt.cli import run
from minigpt.cli.common import (
    CKPT_HELP,
    OneLineParser,
    add_device_argument,
    canonical_options,
    check_stdout_open,
    positive_int,
    resolve_device,
    writing_stdout,
)
from minigpt.data.prepare import DEFAULT_VAL_FRACTION
from minigpt.evaluate import SPLITS


def build_parser() -> argparse.ArgumentParser:
    """The eval command's options."""
    p = OneLineParser(
        prog="minigpt eval",
        description="Measure a checkpoint on a corpus: loss (nats/token), bits per byte and perplexity over "
        "every token, each predicted once from a sliding context.",
    )
    p.add_argument("--ckpt", required=True, help=CKPT_HELP)
    p.add_argument("--data", required=True, help="corpus spec as for training: file, folder, glob, hf:NAME or builtin")
    p.add_argument(
        "--split", choices=SPLITS, default="all",
        help="score every document, or the train or val split training made of this corpus (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--val_fraction", type=float,
        help="the split's validation share (default: the one the checkpoint was trained with, else "
        f"{DEFAULT_VAL_FRACTION:g})",
    )  # fmt: skip
    p.add_argument("--batch_size", type=positive_int, default=8, help="windows per forward pass (default 8)")
    p.add_argument(
        "--stride", type=positive_int,
        help="how far each window moves on, 1 to block_size (default: block_size // 2); a token scored by a later "
        "window sees at least block_size - stride + 1 tokens",
    )  # fmt: skip
    p.add_argument(
        "--cache_dir", type=Path,
        help="where builtin corpora are downloaded (default: $MINIGPT_CACHE, else ~/.cache/minigpt)",
    )  # fmt: skip
    add_device_argument(p)
    return p


def main(argv: Sequence[str]) -> None:
    """Parse `argv`, load the checkpoint and the text, and print one result line."""
    argv = canonical_options(argv)
    args = build_parser().parse_args(argv)
    check_stdout_open()
    lm = load(args.ckpt, resolve_device(args.device))
    result = lm.eval(
        args.data, split=args.split, val_fraction=args.val_fraction, stride=args.stride, batch_size=args.batch_size,
        cache_dir=args.cache_dir,
    )  # fmt: skip
    with writing_stdout():  # e.g. eval RUN/best.ckpt on input.txt (val): 111,540 tokens, ... perplexity 6.24
        print(f"eval {lm.path} on {result}")


if __name__ == "__main__":
    raise SystemExit(run(main))
