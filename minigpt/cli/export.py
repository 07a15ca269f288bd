"""`minigpt export`: a checkpoint as a Hugging Face GPT-2 folder that `transformers` loads without custom code."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from minigpt import checkpoint
from minigpt.api import MiniGPT
from minigpt.cli import run
from minigpt.cli.common import CHECKPOINT_HELP, OneLineParser, canonical_options


def build_parser() -> argparse.ArgumentParser:
    """The export command's options."""
    parser = OneLineParser(
        prog="minigpt export",
        description="Write a checkpoint as a Hugging Face GPT-2 folder: config.json, model.safetensors, "
        "tokenizer files, generation config and a model card.",
    )
    parser.add_argument("--ckpt", required=True, help=CHECKPOINT_HELP)
    parser.add_argument("--out", required=True, type=Path, help="the folder to write (a new or empty one, not the current folder; a link to an empty folder writes there)")
    return parser


def main(argv: Sequence[str]) -> None:
    """Parse `argv` and export the checkpoint."""
    args = build_parser().parse_args(canonical_options(argv))
    MiniGPT(checkpoint.load(args.ckpt), args.ckpt, str(checkpoint.file_to_use(args.ckpt))).export(args.out)  # minigpt checkpoints only: see CHECKPOINT_HELP
    print(f"wrote {args.out}: load it with transformers.AutoModelForCausalLM.from_pretrained('{args.out}')")


if __name__ == "__main__":
    raise SystemExit(run(main))
