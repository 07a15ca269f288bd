"""The `minigpt` command (also `python -m minigpt`): `minigpt COMMAND [OPTIONS]` runs one command's `main`."""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Sequence

from minigpt import __version__
from minigpt.cli import loading, run
from minigpt.cli.stdout import check_stdout_open, writing_stdout
from minigpt.errors import MiniGPTError

COMMANDS = {
    "train": ("minigpt.cli.train", "train a GPT on a corpus (a file, folder, glob, hf: dataset or builtin)"),
    "generate": ("minigpt.cli.generate", "sample text from a checkpoint (also --interactive)"),
    "attention": ("minigpt.cli.attention", "draw a checkpoint's attention maps for a prompt"),
    "eval": ("minigpt.cli.eval", "measure a checkpoint's loss and bits per byte on any text, or its benchmark-task scores"),
    "export": ("minigpt.cli.export", "write a checkpoint as a Hugging Face GPT-2 folder for transformers"),
}


def usage() -> str:
    lines = ["usage: minigpt COMMAND [OPTIONS]    (minigpt COMMAND --help lists a command's options)", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    """Dispatch to the command named by the first argument; the commands' modules load only when used."""
    if not argv:
        raise MiniGPTError(f"a command is needed: minigpt {{{','.join(COMMANDS)}}} (see minigpt --help)")
    if argv[0] in ("-h", "--help", "-V", "--version"):
        check_stdout_open()
        with writing_stdout():
            print(usage() if argv[0] in ("-h", "--help") else f"minigpt {__version__}")
        return
    if argv[0] not in COMMANDS:
        raise MiniGPTError(f"unknown command '{argv[0]}': use one of {', '.join(COMMANDS)} (see minigpt --help)")
    with loading():
        command = importlib.import_module(COMMANDS[argv[0]][0])
    command.main(argv[1:])


def entry() -> None:
    """The console script."""
    code = run(main)
    gc.freeze()  # the interpreter's last collections would scan every object still alive: nothing to gain at exit
    sys.exit(code)


if __name__ == "__main__":
    entry()
