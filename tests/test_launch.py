"""Who a process is in a distributed run, read from the launchers' variables, and how signals are deferred."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from minigpt import signals
from minigpt.errors import MiniGPTError
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


UNSET = {"devices": "auto", "num_nodes": 1, "strategy": "auto"}  # what every config holds unless told
TORCHRUN_2 = {"TORCHELASTIC_RUN_ID": "x", "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
SRUN_2X4 = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2", "SLURM_PROCID": "5", "SLURM_JOB_NAME": "train"}


@pytest.mark.parametrize(
    "environ, trainer, fitted",
    [
        ({}, UNSET, UNSET),  # no launcher
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "1", "NODE_RANK": "0"}, UNSET, UNSET),  # a process Lightning's launcher started
        ({**SRUN_2X4, "SLURM_JOB_NAME": "bash"}, UNSET, UNSET),  # an allocation used as a shell, as Lightning ignores it
        (TORCHRUN_2, UNSET, {"devices": 2, "num_nodes": 1, "strategy": "ddp"}),
        (TORCHRUN_2, {**UNSET, "strategy": "ddp_find_unused_parameters_true"}, {"devices": 2, "num_nodes": 1, "strategy": "ddp_find_unused_parameters_true"}),
        (TORCHRUN_2, {"devices": "0,1"}, {"devices": "0,1", "num_nodes": 1, "strategy": "ddp"}),  # which devices: kept
        ({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}, UNSET, {"devices": 4, "num_nodes": 2, "strategy": "ddp"}),
        ({"WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}, UNSET, {**UNSET, "devices": 1}),
        (SRUN_2X4, UNSET, {"devices": 4, "num_nodes": 2, "strategy": "ddp"}),
        (SRUN_2X4, {**UNSET, "devices": 4, "num_nodes": 2, "strategy": "ddp"}, {"devices": 4, "num_nodes": 2, "strategy": "ddp"}),
        ({"SLURM_NTASKS": "6", "SLURM_TASKS_PER_NODE": "2(x3)", "SLURM_NNODES": "3"}, UNSET, {"devices": 2, "num_nodes": 3, "strategy": "ddp"}),
        ({"SLURM_NTASKS": "2", "SLURM_NNODES": "1"}, UNSET, {"devices": 2, "num_nodes": 1, "strategy": "ddp"}),
        ({**SRUN_2X4, **TORCHRUN_2}, UNSET, {"devices": 2, "num_nodes": 1, "strategy": "ddp"}),  # torchrun inside a job
    ],
    ids=["none", "lightnings-child", "slurm-shell", "torchrun", "torchrun-strategy-kept", "torchrun-device-ids",
         "torchrun-2-nodes", "torchrun-1", "srun", "srun-agrees", "srun-tasks-per-node", "srun-1-node", "torchrun-in-slurm"],
)  # fmt: skip
def test_under_a_launcher_unset_device_options_come_from_its_processes(environ, trainer, fitted):
    assert launch.fit_to_launcher(trainer, environ) == fitted


@pytest.mark.parametrize(
    "environ, trainer, message",
    [
        (TORCHRUN_2, {**UNSET, "devices": 3}, "torchrun started 2 processes per node on 1 node, one device each, but "
         "--trainer.devices 3 asks for another number: leave it unset or use --trainer.devices 2"),
        (TORCHRUN_2, {**UNSET, "num_nodes": 2}, "--trainer.num_nodes 2 asks for another number"),
        (SRUN_2X4, {**UNSET, "devices": 2, "num_nodes": 4}, "SLURM started 4 processes per node on 2 nodes, one device each, "
         "but --trainer.devices 2 and --trainer.num_nodes 4 ask for another number: leave them unset or use --trainer.devices 4 --trainer.num_nodes 2"),
        ({"SLURM_NTASKS": "1", "SLURM_NNODES": "1"}, {**UNSET, "devices": 2}, "use --trainer.devices 1"),
        ({"SLURM_NTASKS": "3", "SLURM_TASKS_PER_NODE": "2,1", "SLURM_NNODES": "2"}, UNSET, "not the same number on each node"),
    ],
    ids=["torchrun-devices", "torchrun-nodes", "srun-both", "srun-one-task", "srun-uneven"],
)  # fmt: skip
def test_under_a_launcher_device_options_that_disagree_with_its_processes_are_refused(environ, trainer, message):
    with pytest.raises(MiniGPTError) as refused:
        launch.fit_to_launcher(trainer, environ)
    assert message in str(refused.value) and "\n" not in str(refused.value)


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


@pytest.mark.parametrize("rank, waits", [("1", True), ("0", False)])
def test_a_bad_option_under_torchrun_gives_rank_0_time_to_say_it(env, rank, waits, capsys):
    """torchrun stops every process once one fails: a rank other than 0 that meets the same bad option must not
    exit first, or rank 0's one line is cut off (it happened in CI once start-up and exit got faster)."""
    from minigpt.cli import run
    from minigpt.cli.train import main

    for name, value in {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                        "TORCHELASTIC_RUN_ID": "x"}.items():  # fmt: skip
        env.setenv(name, value)
    slept = []
    env.setattr(launch.time, "sleep", slept.append)
    assert run(main, ["--trainer.devices", "3"]) == 2
    assert slept == ([launch.REPORT_GRACE_S] if waits else [])
    said = capsys.readouterr().err
    assert ("error: torchrun started 2 processes" in said) is not waits  # rank 0 says it; the others stay quiet


@pytest.mark.parametrize("rank, waits", [("1", True), ("0", False)])
def test_a_stop_during_training_under_torchrun_gives_rank_0_time_to_say_it(env, rank, waits, capsys):
    """The same race once training runs: a divergence, a setting Lightning rejects or a signal stops every
    process alike, and a rank other than 0 (which `explained_stops` keeps quiet) must not exit first."""
    import minigpt.training.run
    from minigpt.cli import run
    from minigpt.cli.train import main
    from minigpt.errors import MiniGPTError, ReportedByRankZero

    for name, value in {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                        "TORCHELASTIC_RUN_ID": "x"}.items():  # fmt: skip
        env.setenv(name, value)

    def diverges(config, **_):  # what explained_stops raises in each process for a divergence
        raise MiniGPTError("training diverged at step 3") if rank == "0" else ReportedByRankZero(2)

    env.setattr(minigpt.training.run, "train", diverges)
    slept = []
    env.setattr(launch.time, "sleep", slept.append)
    assert run(main, ["--trainer.devices", "2", "--trainer.accelerator", "cpu"]) == 2
    assert slept == ([launch.REPORT_GRACE_S] if waits else [])
    assert ("error: training diverged" in capsys.readouterr().err) is not waits


def test_the_other_processes_print_only_their_errors():
    """Lightning's loggers have a level of their own (INFO): rank 1 printed "Initializing distributed: GLOBAL_RANK: 1"."""
    script = (
        "import logging; from minigpt.cli import configure_logging; configure_logging('rank 1'); "
        "logging.getLogger('lightning.fabric').setLevel(logging.INFO); "
        "logging.getLogger('lightning.fabric.utilities.distributed').info('Initializing distributed: GLOBAL_RANK: 1'); "
        "logging.getLogger('minigpt').error('out of memory')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "[rank 1] out of memory\n", done.stderr
