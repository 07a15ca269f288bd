"""Who a process is in a distributed run, read from the launchers' variables, and how signals are deferred."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from minigpt import signals
from minigpt.training import launch

LAUNCH_VARIABLES = ("RANK", "SLURM_PROCID", "SLURM_NTASKS", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", launch.RUN_ENV)


@pytest.fixture
def env(monkeypatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "variables, label",
    [
        ({}, None),  # a plain `python train.py`
        ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, None),  # Lightning's launcher, rank 0
        ({"LOCAL_RANK": "1", "NODE_RANK": "0"}, "rank 1"),  # a process Lightning's launcher started
        ({"NODE_RANK": "1"}, "node 1 rank 0"),  # the first process of a second node
        ({"RANK": "0", "LOCAL_RANK": "0"}, None),  # torchrun
        ({"RANK": "3", "LOCAL_RANK": "1", "NODE_RANK": "1"}, "rank 3"),  # torchrun knows the global rank
        ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, "rank 2"),  # srun
    ],
)  # fmt: skip
def test_only_global_rank_0_decides(env, variables, label):
    for name, value in variables.items():
        env.setenv(name, value)
    assert launch.process_label() == label
    assert launch.is_rank_zero() == (label is None)


@pytest.mark.parametrize(
    "variables, external",
    [({}, False), ({"LOCAL_RANK": "1"}, False), ({"TORCHELASTIC_RUN_ID": "x"}, True), ({"SLURM_NTASKS": "2"}, True), ({"SLURM_NTASKS": "1"}, False)],
)  # fmt: skip
def test_launchers_that_forward_signals_are_recognised(env, variables, external):
    for name, value in variables.items():
        env.setenv(name, value)
    assert launch.external() == external


def test_the_run_folder_reaches_only_processes_rank_0_started(env, tmp_path):
    launch.share_run_folder(tmp_path)
    code = "from minigpt.training import launch; print(launch.shared_run_folder())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), check=True)
    assert child.stdout.strip() == str(tmp_path)
    # A stale value from elsewhere (another parent) is ignored, and so is one in the process that set it.
    assert launch.shared_run_folder() is None
    env.setenv(launch.RUN_ENV, f"1:{tmp_path}")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), check=True)
    assert child.stdout.strip() == "None"


def test_a_failing_child_waits_for_rank_0_to_exit_but_not_forever(env, tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "CHILD_GRACE_S", 0.3)
    env.setenv(launch.RUN_ENV, f"{os.getppid()}:{tmp_path}")  # as if this process were rank 0's child
    start = time.monotonic()
    launch.wait_for_rank_zero()  # the parent (pytest's) outlives the grace period
    assert 0.3 <= time.monotonic() - start < 2
    env.delenv(launch.RUN_ENV)
    start = time.monotonic()
    launch.wait_for_rank_zero()
    assert time.monotonic() - start < 0.1


def test_under_a_launcher_a_repeated_signal_is_still_only_recorded():
    """torchrun sends its own copy of a Ctrl-C the terminal already delivered: that is not a second Ctrl-C."""
    with signals.installed():
        with signals.deferred(escalate=False):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
        assert signals.received() == signal.SIGINT
        with pytest.raises(KeyboardInterrupt), signals.deferred():
            os.kill(os.getpid(), signal.SIGINT)  # after the first, a user's second Ctrl-C stops at once
