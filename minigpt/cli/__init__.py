"""Command-line entry points; the only code that knows about argv."""

from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from minigpt import signals
from minigpt.errors import USER_ERROR_EXIT, Interrupted, MiniGPTError, ReportedByRankZero
from minigpt.training import launch


def configure_logging(label: str | None) -> None:
    """Messages for people, without decoration; in a distributed run only global rank 0 (`label` None) shows
    its progress, while the other processes show errors only, prefixed with their `label`."""
    if label is None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    else:
        # The handler's own level too: a logger with a level of its own (Lightning's are INFO) passes its records
        # up to the root's handlers whatever the root's level ("Initializing distributed: GLOBAL_RANK: 1").
        handler = logging.StreamHandler()
        handler.setLevel(logging.ERROR)
        handler.setFormatter(logging.Formatter(f"[{label}] %(message)s"))
        logging.basicConfig(level=logging.ERROR, handlers=[handler])


@contextmanager
def loading() -> Iterator[None]:
    """Load a command's modules with the cyclic garbage collector paused, then put what they built out of its
    sight for good (`gc.freeze`). Importing torch and Lightning makes ~500,000 objects that live until exit,
    and every full collection scans them all: during the imports (a third of Lightning's import time), during
    training, and once more as the interpreter exits (a second here). The little cyclic garbage importing leaves
    is kept (`train --print_config` peaks 9.5 MB higher, 2%).

    A Ctrl-C or SIGTERM meanwhile waits for the imports to end (a second one does not): raised inside them, it
    was swallowed by one (the command then ran to its end and exited 0) or crossed torch's C++ and aborted the
    process (exit 134 and a C++ trace)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        with signals.deferred():
            yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
    if signals.received() is not None:
        raise KeyboardInterrupt


def run(main: Callable[[Sequence[str]], None], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)` and return the exit code: 0 done, 2 a `MiniGPTError` (one line on stderr), 130 / 143
    after Ctrl-C / SIGTERM (one line, no traceback, whatever was running); anything else is a bug and raises.

    In a distributed run, a stop that all processes meet alike is reported by global rank 0 alone."""
    label = launch.process_label()
    configure_logging(label)
    with signals.installed():
        try:
            main(sys.argv[1:] if argv is None else argv)
        except ReportedByRankZero as stop:
            return stop.code
        except MiniGPTError as err:
            if signals.received() is None:
                print(f"error{f' ({label})' if label else ''}: {one_line(str(err))}", file=sys.stderr)
                return USER_ERROR_EXIT
            return _interrupted(signals.received(), "", label)
        except Interrupted as stop:
            return _interrupted(stop.signum, str(stop), label)
        except BaseException as exc:
            # After a signal, whatever surfaces (KeyboardInterrupt, Lightning's SystemExit, an extension's
            # SystemError) is the interruption itself.
            signum = signals.received()
            if signum is None and isinstance(exc, KeyboardInterrupt):
                signum = signal.SIGINT
            if signum is None:
                raise
            return _interrupted(signum, "", label)
        if signals.received() is not None:  # a library swallowed the KeyboardInterrupt: the signal still counts
            return _interrupted(signals.received(), "", label)
    return 0


LINE_BREAKS = {ord(c): c.encode("unicode_escape").decode() for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(message: str) -> str:
    """`message` with its line breaks written as escapes (``\\n``): a path or value that holds one, quoted or
    not, must not break the one line a user error is."""
    return message.translate(LINE_BREAKS)


def _interrupted(signum: int, message: str, label: str | None) -> int:
    if label is None:  # the other processes of a distributed run stop alike: rank 0 says so once
        print(f"stopped by {signals.name(signum)}" + (f": {one_line(message)}" if message else ""), file=sys.stderr)
    return signals.exit_code(signum)
