"""Command-line entry points; the only code that knows about argv."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from minigpt.errors import MiniGPTError

USER_ERROR_EXIT = 2


def run(main: Callable[[Sequence[str]], None], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)`; a `MiniGPTError` becomes one line on stderr and exit code 2 instead of a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        main(sys.argv[1:] if argv is None else argv)
    except MiniGPTError as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
