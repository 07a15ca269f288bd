"""Ctrl-C and SIGTERM as a clean stop: remember which signal arrived, so a command can exit 130 or 143.

Outside `deferred()`, a signal raises `KeyboardInterrupt` at once (preparation, BPE training, sampling).
Inside it (the training loop), the first signal only sets a flag that training reads between steps, so a
stop never lands inside an optimizer step; a second signal interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)

_received: int | None = None
_deferring = False


def received() -> int | None:
    """The number of the first signal that arrived since `installed()` began, or None."""
    return _received


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + signum


def name(signum: int) -> str:
    """How the user calls the signal: Ctrl-C, SIGTERM."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _handle(signum: int, frame: FrameType | None) -> None:
    global _received
    first = _received is None
    if first:
        _received = signum
    if not (_deferring and first):
        raise KeyboardInterrupt


@contextmanager
def installed() -> Iterator[None]:
    """Route SIGINT and SIGTERM through this module for the duration of a command; restore them after."""
    global _received
    _received = None
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {s: signal.getsignal(s) for s in HANDLED}
    for s in HANDLED:
        signal.signal(s, _handle)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """While inside, the first signal is only recorded (see the module docstring)."""
    global _deferring
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
