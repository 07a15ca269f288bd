"""Ctrl-C and SIGTERM as a clean stop: remember which signal arrived, so a command can exit 130 or 143.

Outside `deferred()`, a signal raises `KeyboardInterrupt` at once (preparation, BPE training, sampling).
Inside it (the training loop), the first signal only sets a flag that training reads between steps, so a
stop never lands inside an optimizer step; a second signal interrupts at once, unless a launcher such as
torchrun forwards the signals (it sends its own copy of a Ctrl-C, and escalates to SIGKILL by itself).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)

_received: int | None = None
_deferring = False
_escalate = True
_installed = False


def received() -> int | None:
    """The number of the first signal that arrived since `installed()` began, or None. Signals reach the main
    thread alone: a command run in another thread (`minigpt.train` in a notebook's thread) never receives one."""
    return _received if threading.current_thread() is threading.main_thread() else None


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
    if not (_deferring and (first or not _escalate)):
        raise KeyboardInterrupt


@contextmanager
def installed() -> Iterator[None]:
    """Route SIGINT and SIGTERM through this module for the duration of a command (or a library call that a
    Ctrl-C must stop); restore them after. Inside another `installed()` it changes nothing."""
    global _received, _installed
    if _installed or threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
        yield
        return
    _received = None
    previous = {s: signal.getsignal(s) for s in HANDLED}
    previous_hook = sys.unraisablehook
    for s in HANDLED:
        signal.signal(s, _handle)
    sys.unraisablehook = functools.partial(_unraisable, previous_hook)
    _installed = True
    try:
        yield
    finally:
        _installed = False
        sys.unraisablehook = previous_hook
        for s, handler in previous.items():
            signal.signal(s, handler)


def _unraisable(previous_hook: Callable[[Any], None], unraisable: Any) -> None:
    """A signal's KeyboardInterrupt raised where Python cannot raise (a weakref callback, a __del__) is only
    printed, as "Exception ignored", and the command runs on: send the signal again instead, a moment later (sent
    now, its handler would raise inside this hook), to be raised where it can stop the command."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt) and _received is not None:
        again = threading.Timer(0.01, os.kill, (os.getpid(), _received))
        again.daemon = True
        again.start()
        return
    previous_hook(unraisable)


def reclaim() -> None:
    """Route SIGINT and SIGTERM through this module again, after a library (Lightning) installed its own."""
    if _installed and threading.current_thread() is threading.main_thread():
        for s in HANDLED:
            signal.signal(s, _handle)


@contextmanager
def deferred(escalate: bool = True) -> Iterator[None]:
    """While inside, the first signal is only recorded, and with `escalate` False every later one too (see the
    module docstring)."""
    global _deferring, _escalate
    if threading.current_thread() is not threading.main_thread():  # the main thread's signals are its own
        yield
        return
    _deferring, _escalate = True, escalate
    try:
        yield
    finally:
        _deferring, _escalate = False, True
