"""Which process of a multi-process run this is, known before Lightning starts, and what each process may do.

Every process of a run executes the training command: Lightning's launcher re-runs it for local ranks 1..N-1
once global rank 0 starts fitting; ``torchrun`` and SLURM's ``srun`` start all ranks at once; on several
nodes each node starts its own. Global rank 0 alone chooses the run folder, writes files and talks to
the user; the launcher's environment variables say which process this is long before Lightning's process
group exists.
"""

from __future__ import annotations

import os
import time

RUN_ENV = "MINIGPT_RUN"
"""Set by global rank 0 for the processes Lightning's launcher starts from it: ``<its pid>:<run folder>``."""

CHILD_GRACE_S = 30.0
"""How long a launched process that fails waits for rank 0 to finish its own report (see `outlive_rank_zero`)."""


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def process_label() -> str | None:
    """None in the run's global rank 0 (and in any process not started by a launcher); otherwise the name
    this process goes by in its messages, such as ``rank 1``."""
    for name in ("RANK", "SLURM_PROCID"):  # torchrun, srun: the global rank itself
        rank = _env_int(name)
        if rank is not None:
            return f"rank {rank}" if rank else None
    node, local = _env_int("NODE_RANK") or _env_int("GROUP_RANK") or 0, _env_int("LOCAL_RANK") or 0
    if node:
        return f"node {node} rank {local}"
    return f"rank {local}" if local else None


def is_rank_zero() -> bool:
    """True in the process that decides for the run: global rank 0, or the only process."""
    return process_label() is None


def external() -> bool:
    """True when a launcher outside minigpt started this process (torchrun, srun); it forwards signals to every
    process and escalates to SIGKILL on its own, so a repeated signal is not a user's second Ctrl-C."""
    return any(name in os.environ for name in ("TORCHELASTIC_RUN_ID", "RANK")) or (_env_int("SLURM_NTASKS") or 1) > 1


def share_run_folder(path: os.PathLike[str] | str) -> None:
    """Called by rank 0 before fitting: the processes Lightning's launcher starts from it inherit the folder."""
    os.environ[RUN_ENV] = f"{os.getpid()}:{os.fspath(path)}"


def shared_run_folder() -> str | None:
    """In a process Lightning's launcher started from rank 0, the run folder rank 0 chose; else None."""
    parent, sep, path = os.environ.get(RUN_ENV, "").partition(":")
    return path if sep and parent == str(os.getppid()) else None


def wait_for_rank_zero() -> None:
    """In a process Lightning's launcher started, wait (at most `CHILD_GRACE_S`) until rank 0 has exited.

    Lightning's process observer kills rank 0 with SIGKILL as soon as it sees one of its children fail,
    which would cut short rank 0's final save and its message to the user. A process that fails for a
    reason of its own gives up waiting after the grace period, and the observer then stops the run.
    """
    if shared_run_folder() is None:
        return
    parent, deadline = os.getppid(), time.monotonic() + CHILD_GRACE_S
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.1)
