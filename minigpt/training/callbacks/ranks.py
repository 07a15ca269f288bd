"""A process of a distributed run that dies (``kill -9``, the kernel's out-of-memory killer) leaves the others with a
transport error inside their next collective (gloo: "Connection reset by peer"). `RankWatch` finds which process
died, so that `minigpt.training.run` says it in one line instead of the survivor's traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import lightning as L

from minigpt.errors import MiniGPTError
from minigpt.training import launch
from minigpt.training.callbacks.checkpoints import StopAtStep

DEATH_GRACE_S = 2.0
"""How long a failing launcher process waits for a dying child to be reaped: the peer's sockets close as it
dies, a moment before its exit status can be read."""


class RankLost(MiniGPTError):
    """A process of a distributed run died; every survivor that knows it says so (one line each)."""


class RankWatch(L.Callback):
    """When training fails in a distributed run, `lost` names the process that died, if one did: for the process
    Lightning's launcher started the others from, one of those children; for a child, the process that started it
    (global rank 0). Only a death is named; a failure of this process's own is left as it is."""

    def __init__(self) -> None:
        self.lost: str | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.world_size > 1 and not isinstance(exception, (KeyboardInterrupt, StopAtStep)):
            self.lost = _dead_child(trainer) or _dead_launcher()


def _dead_child(trainer: L.Trainer) -> str | None:
    children: list[subprocess.Popen] | None = getattr(trainer.strategy.launcher, "procs", None)
    if not children:
        return None
    deadline = time.monotonic() + DEATH_GRACE_S
    while (dead := next((c for c in children if c.poll() not in (None, 0)), None)) is None:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    rank = trainer.global_rank + 1 + children.index(dead)  # the children are local ranks 1, 2, ... of this node
    stop_children(trainer)  # the others wait in a collective that can never complete
    return f"rank {rank} (pid {dead.pid}) {_ended(dead.returncode)}"


def stop_children(trainer: L.Trainer) -> None:
    """Stop the processes Lightning's launcher started from this one: when it stops alone (one dead, or a failure
    of its own such as a full disk, which it reports), they would wait in a collective that never completes, then
    each print a transport error's traceback. The list is emptied because Lightning's process observer watches
    it, and on seeing a dead child kills this process too (SIGKILL) before it could say what happened."""
    children: list[subprocess.Popen] | None = getattr(trainer.strategy.launcher, "procs", None)
    for child in children or []:
        if child.poll() is None:
            child.kill()
            child.wait()
    if children:
        children.clear()


def _dead_launcher() -> str | None:
    """In a child of Lightning's launcher, rank 0 when it died: the child was handed to another parent."""
    owner = os.environ.get(launch.RUN_ENV, "").partition(":")[0]
    if not owner.isdigit() or int(owner) in (os.getpid(), os.getppid()):
        return None
    return f"rank 0 (pid {owner}) died"


def _ended(code: int) -> str:
    if code > 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:  # a real-time signal has no name
        return f"was killed by signal {-code}"
