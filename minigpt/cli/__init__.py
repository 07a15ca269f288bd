"""Command-line entry points; the only code that knows about argv."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Sequence

from minigpt import signals
from minigpt.errors import Interrupted, MiniGPTError

USER_ERROR_EXIT = 2


def run(main: Callable[[Sequence[str]], None], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)` and return the exit code: 0 done, 2 a `MiniGPTError` (one line on stderr), 130 / 143
    after Ctrl-C / SIGTERM (one line, no traceback, whatever was running); anything else is a bug and raises."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with signals.installed():
        try:
            main(sys.argv[1:] if argv is None else argv)
        except MiniGPTError as err:
            if signals.received() is None:
                print(f"error: {err}", file=sys.stderr)
                return USER_ERROR_EXIT
            return _interrupted(signals.received(), "")
        except Interrupted as stop:
            return _interrupted(stop.signum, str(stop))
        except BaseException as exc:
            # After a signal, whatever surfaces (KeyboardInterrupt, Lightning's SystemExit, an extension's
            # SystemError) is the interruption itself.
            signum = signals.received()
            if signum is None and isinstance(exc, KeyboardInterrupt):
                signum = signal.SIGINT
            if signum is None:
                raise
            return _interrupted(signum, "")
    return 0


def _interrupted(signum: int, message: str) -> int:
    print(f"stopped by {signals.name(signum)}" + (f": {message}" if message else ""), file=sys.stderr)
    return signals.exit_code(signum)
