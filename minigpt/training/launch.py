"""Which process of a multi-process run this is, known before Lightning starts, and what each process may do.

Every process of a run executes the training command: Lightning's launcher re-runs it for local ranks 1..N-1
once global rank 0 starts fitting; ``torchrun`` and SLURM's ``srun`` start all ranks at once; on several
nodes each node starts its own. Global rank 0 alone chooses the run folder, writes files and talks to
the user; the launcher's environment variables say which process this is long before Lightning's process
group exists.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from minigpt.errors import MiniGPTError

RUN_ENV = "MINIGPT_RUN"
"""Set by global rank 0 for the processes Lightning's launcher starts from it: ``<its pid>:<run folder>``."""

CHILD_GRACE_S = 30.0
"""How long a launched process that fails waits for rank 0 to finish its own report (see `outlive_rank_zero`)."""


REPORT_GRACE_S = 5.0
"""How long a process other than rank 0 that stops for rank 0's reason waits for rank 0 to say it (see
`let_rank_zero_report`)."""


def _env_int(name: str) -> int | None:
    return _int(os.environ.get(name))


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


@dataclass(frozen=True)
class Started:
    """The processes a launcher outside minigpt started for one run, each training on one device."""

    by: str
    """The launcher, as the user knows it: ``torchrun`` or ``SLURM``."""
    per_node: int
    nodes: int


def started_by_launcher(environ: Mapping[str, str] = os.environ) -> Started | None:
    """The processes torchrun (``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``) or SLURM (``SLURM_NTASKS``,
    ``SLURM_NTASKS_PER_NODE`` or ``SLURM_TASKS_PER_NODE``, ``SLURM_NNODES``) started, as Lightning reads them:
    torchrun first (it may run inside a SLURM job), and no SLURM job whose name is ``bash`` or ``interactive``
    (an allocation used as a shell). None without a launcher, and in the processes Lightning's own launcher
    starts, which set ``WORLD_SIZE`` alone. Raises `MiniGPTError` for nodes with unequal numbers of processes."""
    world, local = _int(environ.get("WORLD_SIZE")), _int(environ.get("LOCAL_WORLD_SIZE"))
    if world is not None and local is not None:
        return _even("torchrun", world, local, world // max(local, 1), "--nproc_per_node")
    tasks = _int(environ.get("SLURM_NTASKS"))
    if tasks is None or environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    nodes = _int(environ.get("SLURM_NNODES") or environ.get("SLURM_JOB_NUM_NODES")) or 1
    layout = environ.get("SLURM_NTASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE") or ""
    match = re.fullmatch(r"(\d+)(?:\(x\d+\))?", layout)  # "4", or "4(x2)": 4 on each of 2 nodes
    per_node = int(match.group(1)) if match else tasks // nodes
    return _even("SLURM", tasks, per_node, nodes, "--ntasks-per-node")


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _even(by: str, world: int, per_node: int, nodes: int, flag: str) -> Started:
    if per_node < 1 or nodes < 1 or per_node * nodes != world:
        raise MiniGPTError(
            f"{by} started {world} processes that are not the same number on each node: start them with {by}'s {flag}"
        )
    return Started(by, per_node, nodes)


def fit_to_launcher(trainer: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The --trainer options for the processes a launcher started (see `started_by_launcher`), decided alike in
    every process: Lightning trains one device per process, so devices must be the processes per node and
    num_nodes the nodes. Left unset (devices auto, num_nodes 1), they are taken from the launcher, and strategy
    auto becomes ddp when there is more than one process; set to other numbers, they are refused (`MiniGPTError`),
    since Lightning would otherwise train one independent copy of the run in each process, or fail mid-fit."""
    started, fitted = started_by_launcher(environ), dict(trainer)
    if started is None:
        return fitted
    devices, nodes = _count(trainer.get("devices")), _count(trainer.get("num_nodes"))
    nodes = None if nodes == 1 else nodes  # Lightning's default: one node unless told, as every config leaves it
    wrong = {"devices": devices not in (None, started.per_node), "num_nodes": nodes not in (None, started.nodes)}
    if any(wrong.values()):
        asked = " and ".join(f"--trainer.{name} {trainer[name]}" for name in wrong if wrong[name])
        fix = " ".join(f"--trainer.{name} {n}" for name, n in (("devices", started.per_node), ("num_nodes", started.nodes)) if wrong[name])
        both = all(wrong.values())
        raise MiniGPTError(
            f"{started.by} started {_many(started.per_node, 'process')} per node on {_many(started.nodes, 'node')}, "
            f"one device each, but {asked} {'ask' if both else 'asks'} for another number: leave "
            f"{'them' if both else 'it'} unset or use {fix}"
        )
    if devices is None:  # a list of devices that agrees says which ones: kept
        fitted["devices"] = started.per_node
    fitted["num_nodes"] = started.nodes
    if started.per_node * started.nodes > 1 and trainer.get("strategy") in (None, "auto"):
        fitted["strategy"] = "ddp"
    return fitted


def _many(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}es" if thing.endswith("s") else f"{n} {thing}s"


def _count(value: Any) -> int | None:
    """How many devices or nodes an option asks for: None when unset, auto or -1 (all there are)."""
    if value is None or value in ("auto", -1, "-1"):
        return None
    if isinstance(value, (list, tuple)):
        return len(value)
    if isinstance(value, str) and "," in value:  # "0,1": devices by index
        return len([part for part in value.split(",") if part.strip()])
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def share_run_folder(path: os.PathLike[str] | str) -> None:
    """Called by rank 0 before fitting: the processes Lightning's launcher starts from it inherit the folder."""
    os.environ[RUN_ENV] = f"{os.getpid()}:{os.fspath(path)}"


def shared_run_folder() -> str | None:
    """In a process Lightning's launcher started from rank 0, the run folder rank 0 chose; else None."""
    parent, sep, path = os.environ.get(RUN_ENV, "").partition(":")
    return path if sep and parent == str(os.getppid()) else None


def let_rank_zero_report() -> None:
    """In a process that a launcher outside minigpt started (torchrun, srun), other than global rank 0, that
    stops for a reason every process meets alike (a bad option, a divergence, a signal): wait up to
    `REPORT_GRACE_S` before exiting.
    torchrun stops every process as soon as one fails, and this one may fail first (its start-up was a moment
    quicker), which would cut off rank 0's one-line explanation; rank 0's exit ends the wait (torchrun stops
    this process then)."""
    if external() and not is_rank_zero():
        time.sleep(REPORT_GRACE_S)


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
