"""`minigpt eval`: a checkpoint's loss, bits per byte and perplexity on a corpus, every token scored once; or its
scores on benchmark tasks through lm-evaluation-harness.

``minigpt eval --ckpt RUN --data SPEC [--split val]`` prints one line. `--split val` scores the validation text
the run held out of that corpus (see `minigpt.evaluate`). ``minigpt eval --ckpt RUN --tasks hellaswag,...``
prints one line per task and metric (see `minigpt.harness`, imported only then: lm-eval takes seconds to load).
Imports no Lightning, so it starts quickly.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from minigpt.api import load
from minigpt.cli import run
from minigpt.cli.common import (
    CKPT_HELP,
    OneLineParser,
    add_device_argument,
    canonical_options,
    positive_int,
    resolve_device,
)
from minigpt.cli.stdout import check_stdout_open, writing_stdout
from minigpt.data.prepare import DEFAULT_VAL_FRACTION
from minigpt.errors import MiniGPTError
from minigpt.evaluate import SPLITS

log = logging.getLogger(__name__)

CORPUS_OPTIONS = ("data", "split", "val_fraction", "stride", "cache_dir")
"""Options of scoring a corpus, which --tasks does not take."""
TASK_OPTIONS = ("limit", "num_fewshot", "include_path", "output")
"""Options of benchmark tasks, which need --tasks."""


def build_parser() -> argparse.ArgumentParser:
    """The eval command's options."""
    p = OneLineParser(
        prog="minigpt eval",
        description="Measure a checkpoint on a corpus: loss (nats/token), bits per byte and perplexity over "
        "every token, each predicted once from a sliding context. With --tasks instead of --data: its scores on "
        "lm-evaluation-harness tasks (pip install 'minigpt[eval]'), computed by minigpt's own model.",
    )
    p.add_argument("--ckpt", required=True, help=CKPT_HELP)
    p.add_argument("--data", help="corpus spec as for training: file, folder, glob, hf:NAME or builtin")
    p.add_argument(
        "--split", choices=SPLITS,
        help="score every document, or the train or val split training made of this corpus (default all)",
    )  # fmt: skip
    p.add_argument(
        "--val_fraction", type=float,
        help="the split's validation share (default: the one the checkpoint was trained with, else "
        f"{DEFAULT_VAL_FRACTION:g})",
    )  # fmt: skip
    p.add_argument("--batch_size", type=positive_int, default=8, help="windows per forward pass (default 8; fewer where their logits would pass 1 GiB)")
    p.add_argument(
        "--stride", type=positive_int,
        help="how far each window moves on, 1 to block_size (default: block_size // 2); a token scored by a later "
        "window sees at least block_size - stride + 1 tokens",
    )  # fmt: skip
    p.add_argument(
        "--cache_dir", type=Path,
        help="where builtin corpora are downloaded (default: $MINIGPT_CACHE, else ~/.cache/minigpt)",
    )  # fmt: skip
    tasks = p.add_argument_group("benchmark tasks (lm-evaluation-harness)")
    tasks.add_argument("--tasks", help="lm-eval task names, comma-separated: hellaswag,lambada_openai,...")
    tasks.add_argument("--limit", type=positive_int, help="score each task's first N documents only (default: all)")
    tasks.add_argument(
        "--num_fewshot", type=int, help="examples in each prompt (default: each task's own, usually 0)"
    )  # fmt: skip
    tasks.add_argument("--include_path", type=Path, help="a folder of task YAMLs to add, as lm_eval --include_path")
    tasks.add_argument("--output", type=Path, help="also save the results as JSON to this new file")
    add_device_argument(p)
    return p


def main(argv: Sequence[str]) -> None:
    """Parse `argv`, load the checkpoint, and print its result on the text (one line) or on the tasks."""
    argv = canonical_options(argv)
    args = build_parser().parse_args(argv)
    check_options(args)
    check_stdout_open()
    if args.tasks is not None:
        run_tasks(args)
        return
    lm = load(args.ckpt, resolve_device(args.device))
    result = lm.eval(
        args.data, split=args.split or "all", val_fraction=args.val_fraction, stride=args.stride,
        batch_size=args.batch_size, cache_dir=args.cache_dir,
    )  # fmt: skip
    with writing_stdout():  # e.g. eval RUN/best.ckpt on input.txt (val): 111,540 tokens, ... perplexity 6.24
        print(f"eval {lm.path} on {result}")


def check_options(args: argparse.Namespace) -> None:
    """One of --data and --tasks, each with its own options only."""
    if args.tasks is None and args.data is None:
        raise MiniGPTError("give --data (a corpus to score) or --tasks (benchmark tasks such as hellaswag)")
    if args.tasks is not None:
        given = [name for name in CORPUS_OPTIONS if getattr(args, name) is not None]
        if given:
            raise MiniGPTError(f"--{given[0]} scores a corpus and does not go with --tasks: drop one of them")
    else:
        given = [name for name in TASK_OPTIONS if getattr(args, name) is not None]
        if given:
            raise MiniGPTError(f"--{given[0]} is for benchmark tasks: add --tasks, or drop it")
        if args.val_fraction is not None and args.split in (None, "all"):
            raise MiniGPTError("--val_fraction says how a run split its corpus: give it with --split val or --split train")
    if args.output is not None:  # checked before the run too, so that a long run is not lost at its end
        if args.output.exists():
            raise MiniGPTError(f"{args.output} already exists: give --output a new file name, or remove it first")
        if not args.output.parent.is_dir():
            raise MiniGPTError(f"the folder of {args.output} does not exist: create it, or give another --output")


def run_tasks(args: argparse.Namespace) -> None:
    """Score the checkpoint on --tasks and print one line per task and metric."""
    from minigpt import harness  # noqa: F401  (lm-eval, an optional extra: refused in one line before loading)

    logging.getLogger("lm_eval").setLevel(logging.WARNING)  # its INFO is a log of its own steps
    lm = load(args.ckpt, resolve_device(args.device))
    results = lm.tasks(
        args.tasks, limit=args.limit, num_fewshot=args.num_fewshot, include_path=args.include_path,
        batch_size=args.batch_size,
    )  # fmt: skip
    with writing_stdout():  # e.g. hellaswag  acc  0.2891 ± 0.0045  n=10,042
        print(results)
    if args.output is not None:
        log.info("results saved to %s", results.save(args.output))


if __name__ == "__main__":
    raise SystemExit(run(main))
