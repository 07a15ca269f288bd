#!/usr/bin/env python
"""Train a GPT: `python train.py --help` lists every option; see README.md."""

from minigpt.cli import run
from minigpt.cli.train import main

if __name__ == "__main__":
    raise SystemExit(run(main))
