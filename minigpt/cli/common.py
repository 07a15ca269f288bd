"""Pieces the commands share: one option spelling, one-line usage errors, the device option, and standard
output that fails in one line rather than a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import torch

from minigpt import device
from minigpt.cli.stdout import check_stdout_open, writing_stdout
from minigpt.suggest import did_you_mean, option_names

CHECKPOINT_HELP = "a checkpoint file or run folder (its best.ckpt, else its last.ckpt)"
CKPT_HELP = CHECKPOINT_HELP + ", a Hugging Face GPT-2 folder, or hf:REPO_ID"


def canonical_options(argv: Sequence[str]) -> list[str]:
    """`argv` with every option name spelled with underscores, the style of all minigpt commands (and of
    Lightning's `--trainer.max_steps`): `--max-new-tokens 50` becomes `--max_new_tokens 50`, so the dashed
    spelling works too. Values are never touched, nor anything after a bare `--`."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg.partition("=")
            out[i] = "--" + name[2:].replace("-", "_") + eq + value
    return out


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (exit code 2 stays), an unknown option's with the closest real
    one."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}{did_you_mean(unknown, option_names(self))}")
        for action in self._actions:
            # argparse drops a value that is exactly "--" (--data=--) and stores an empty list in its place
            if isinstance(action, argparse._StoreAction) and action.nargs is None and getattr(parsed, action.dest, None) == []:
                self.error(f"argument {action.option_strings[0]}: expected one value, not '--'")
        return parsed

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def print_help(self, file: Any = None) -> None:
        """--help on standard output; a closed or full one is a one-line error (argparse drops a failed write
        and ends with 0, the help lost), a reader gone (`| head`) is quiet."""
        check_stdout_open()
        with writing_stdout():
            sys.stdout.write(self.format_help())


def not_utf8(text: str) -> str | None:
    """What is wrong with `text` as UTF-8 (a phrase after "... is"), or None. Bytes that are not UTF-8 on the
    command line or a standard input read with surrogateescape arrive as lone surrogates, which the tokenizer
    would silently turn into U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        char = text[err.start]
        what = f"byte {ord(char) - 0xDC00:#x}" if 0xDC80 <= ord(char) <= 0xDCFF else f"a lone surrogate {char!r}"
        return f"not valid UTF-8: {what} at character {err.start}"
    return None


def as_utf8(text: str) -> str:
    """`text` as the UTF-8 it holds, or `ValueError` naming the bad byte: in a C locale Python reads even valid
    UTF-8 bytes as surrogate escapes, so escaped bytes are decoded again before any is called bad."""
    if not_utf8(text) is None:
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise ValueError(not_utf8(text)) from None


def utf8_text(text: str) -> str:
    """argparse type for text the model reads (a prompt, a stop string): UTF-8, else a one-line usage error."""
    try:
        return as_utf8(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def positive_int(text: str) -> int:
    """argparse type for a count of at least 1: anything else is a one-line usage error."""
    value = int(text)  # a ValueError becomes argparse's "invalid positive_int value"
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """Add --device; `resolve_device` turns its value into a torch device."""
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
        help="where to run (default %(default)s = cuda, else mps, else cpu); bf16 autocast on GPUs that support it",
    )  # fmt: skip


def resolve_device(name: str) -> torch.device:
    """The torch device for --device; asking for a GPU that is not there is a user error."""
    return device.resolve(name, "--device")


