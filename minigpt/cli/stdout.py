"""Standard output for people: refused when closed, and ended quietly when its reader has gone (`| head`). Light
on purpose: `minigpt --help` prints through it without loading torch."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from minigpt.errors import MiniGPTError


def check_stdout_open() -> None:
    """Refuse to start when standard output is closed (`>&-`): everything printed would vanish."""
    if sys.stdout is None:
        raise MiniGPTError("cannot write to standard output: it is closed")


@contextlib.contextmanager
def writing_stdout() -> Iterator[None]:
    """Print inside this block, flushed at its end. A reader that has gone (`| head`) ends the output quietly;
    any other failed write (a full disk, an encoding that cannot show the text) is a one-line `MiniGPTError`.
    """
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
    except OSError as err:
        _discard_stdout()
        raise MiniGPTError(f"cannot write to standard output: {err.strerror or err}") from None
    except UnicodeEncodeError as err:
        # utf-8 writes any character, surrogateescape the undecodable bytes of a command line.
        fix = "set PYTHONIOENCODING=utf-8:surrogateescape"
        raise MiniGPTError(f"cannot write to standard output: {err}; {fix}") from None


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so that Python's flush at exit does not fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
