"""Multi-process training on CPU with gloo, launched every way the README shows: Lightning's own launcher
(`--trainer.devices 2`), ddp_spawn, torchrun, and two "nodes" on one machine.

Every launch must leave exactly one run folder, exit 0 in every process, and print what a person reads
(validation lines, samples) once; a stopped DDP run must resume to exactly the uninterrupted weights.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from minigpt.cli import run
from minigpt.cli.train import main
from tests.helpers import DDP, EVERY, REPO, STEPS, TINY, assert_one_run, corpus, environment, output, train_command
from tests.helpers import train_subprocess as train

pytestmark = pytest.mark.e2e

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_with_lightnings_launcher_makes_one_run_and_prints_once(tmp_path):
    done = train(tmp_path, *DDP, "--out_dir", "run")
    assert done.returncode == 0, output(done)
    assert_one_run(tmp_path / "run", output(done))
    # TensorBoard puts each validation at the step the terminal names.
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"scalars": 0}).Reload()
    for tag in ("val/loss", "val/bpb", "val/ppl"):
        assert [e.step for e in events.Scalars(tag)] == [EVERY, STEPS]


@pytest.mark.slow
def test_ddp_without_out_dir_uses_one_default_folder(tmp_path):
    done = train(tmp_path, *DDP)
    assert done.returncode == 0, output(done)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["default"]
    assert_one_run(tmp_path / "runs" / "default", output(done))


@pytest.mark.slow
@pytest.mark.parametrize("out_dir", [["--out_dir", "run"], []], ids=["out_dir", "default"])
def test_torchrun_makes_one_run_and_every_process_exits_0(tmp_path, out_dir):
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    done = train(tmp_path, *DDP, *out_dir, launcher=torchrun)
    assert done.returncode == 0, output(done)  # torchrun fails if any process does
    assert_one_run(tmp_path / ("run" if out_dir else "runs/default"), output(done))


TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")


@pytest.mark.slow
def test_torchrun_without_device_options_makes_one_ddp_run_of_its_processes(tmp_path):
    """Not two independent copies of the run: devices, num_nodes and strategy come from torchrun's variables."""
    done = train(tmp_path, "--out_dir", "run", launcher=TORCHRUN)
    assert done.returncode == 0, output(done)
    assert_one_run(tmp_path / "run", output(done))
    trainer = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["trainer"]
    assert (trainer["devices"], trainer["num_nodes"], trainer["strategy"]) == (2, 1, "ddp")
    assert "8 windows per batch × 2 processes" in (tmp_path / "run" / "README.md").read_text()


def test_torchrun_with_devices_that_disagree_is_refused_by_rank_0_in_one_line_before_anything_is_written(tmp_path):
    done = train(tmp_path, "--trainer.devices", "3", "--out_dir", "run", launcher=TORCHRUN)
    text = output(done)
    assert done.returncode != 0, text  # torchrun exits 1 when a process does, and says so in its own words
    assert text.count("error: torchrun started 2 processes per node on 1 node, one device each, but --trainer.devices 3") == 1, text
    assert "ValueError" not in text and "minigpt/" not in text, text  # no traceback of ours in any process
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_two_nodes_share_the_folder_rank_0_chooses(tmp_path):
    nodes = ["--trainer.num_nodes", "2", "--trainer.devices", "1", "--trainer.strategy", "ddp"]
    env = environment(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    logs = [tmp_path / f"node{n}.log" for n in (0, 1)]
    processes = []
    for node, log in enumerate(logs):
        with log.open("w") as out:
            processes.append(subprocess.Popen(
                train_command(tmp_path, *nodes), cwd=tmp_path, env={**env, "NODE_RANK": str(node)},
                stdout=out, stderr=subprocess.STDOUT,
            ))  # fmt: skip
    assert [p.wait(timeout=300) for p in processes] == [0, 0], logs[0].read_text() + logs[1].read_text()
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["default"]
    assert_one_run(tmp_path / "runs" / "default", logs[0].read_text() + logs[1].read_text())


@pytest.mark.slow
def test_ddp_spawn_workers_log_like_the_command(tmp_path):
    done = train(tmp_path, "--trainer.devices", "2", "--trainer.strategy", "ddp_spawn", "--out_dir", "run")
    assert done.returncode == 0, output(done)
    assert_one_run(tmp_path / "run", output(done))


def start_and_stop(tmp_path: Path, command: list[str], signum: int, to_child: bool) -> tuple[int, str]:
    """Start a DDP run, wait for its first checkpoint, send `signum` to rank 0 or to rank 1 alone."""
    log = tmp_path / "stopped.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=tmp_path, env=environment(), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "last.ckpt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if to_child:
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        os.kill(int(children[0]), signum)
    else:
        process.send_signal(signum)
    return process.wait(timeout=120), log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("signum, to_child", [(signal.SIGTERM, False), (signal.SIGINT, True)], ids=["sigterm", "ctrl-c-to-rank-1"])
def test_a_stopped_ddp_run_resumes_to_exactly_the_uninterrupted_weights(tmp_path, signum, to_child):
    steps = ["--trainer.max_steps", "200", "--model.dropout", "0.1", "--samples", "0"]
    (tmp_path / "whole").mkdir()
    whole = train(tmp_path / "whole", *DDP, *steps, "--out_dir", "run")
    assert whole.returncode == 0, output(whole)

    code, text = start_and_stop(tmp_path, train_command(tmp_path, *DDP, *steps, "--out_dir", "run"), signum, to_child)
    assert code == 128 + signum, text
    assert text.count("stopped by") == 1 and "continue with minigpt train --resume" in text, text
    stopped_at = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < stopped_at < 200 and f"step {stopped_at} is saved" in text

    resumed = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--resume", "run"], cwd=tmp_path, env=environment(),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, output(resumed)
    a = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "whole" / "run" / "last.ckpt", weights_only=True)["state_dict"]
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0


@pytest.mark.slow
def test_ddp_validation_loss_is_within_1_percent_of_one_process_with_the_same_global_batch(tmp_path):
    budget = ["--trainer.max_steps", "100", "--trainer.val_check_interval", "50", "--val_windows", "256", "--samples", "0"]
    one = train(tmp_path, *budget, "--batch_size", "16", "--out_dir", "one")
    two = train(tmp_path, *budget, *DDP, "--batch_size", "8", "--out_dir", "two")
    assert one.returncode == 0 and two.returncode == 0, output(one) + output(two)
    for step in (50, 100):
        single, ddp = (float(output(d).split(f"step {step}: val loss ")[1].split()[0]) for d in (one, two))
        assert abs(ddp - single) / single < 0.01, (step, single, ddp)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--trainer.strategy", "fsdp"], "shards the model across CUDA GPUs"),
        (["--trainer.strategy", "fsdp", "--trainer.accelerator", "cpu"], "on CPUs use --trainer.strategy ddp"),
        (["--trainer.devices", "100000"], "use at most"),
        (["--trainer.strategy", "no_such_strategy"], "invalid strategy name"),
    ],
)  # fmt: skip
def test_unusable_distributed_settings_are_one_line_errors_before_anything_is_written(tmp_path, capsys, args, message):
    if torch.cuda.is_available() and "fsdp" in args and "cpu" not in args:
        pytest.skip("FSDP on a GPU machine is a valid setting")
    code = run(main, [*TINY, "--data", str(corpus(tmp_path)), "--cache_dir", str(tmp_path / "cache"), "--trainer.accelerator", "auto", *args,
                      "--out_dir", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("rank, lines", [("0", 1), ("1", 0)])
def test_a_bad_value_is_reported_by_rank_0_alone_before_anything_is_prepared(tmp_path, capsys, monkeypatch, rank, lines):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = run(main, [*TINY, "--data", str(corpus(tmp_path)), "--cache_dir", str(tmp_path / "cache"),
                      "--val_fraction", "0.9", "--out_dir", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("--val_fraction 0.9 is out of range") == lines, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


PYTHON_TRAIN = """
import os, sys
import minigpt
run = minigpt.train(data=sys.argv[1], cache_dir=sys.argv[2], out_dir="run", **{
    "model": {"block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 64}, "batch_size": 8, "val_windows": 64,
    "sample_tokens": 20, "trainer": {"max_steps": %d, "val_check_interval": %d, "accelerator": "cpu",
    "devices": 2, "strategy": "ddp", "enable_progress_bar": False, "enable_model_summary": False},
})
print(f"rank {os.environ['RANK']} returned {run}")
""" % (STEPS, EVERY)


@pytest.mark.slow
def test_minigpt_train_from_a_script_under_torchrun_makes_one_run(tmp_path):
    """Under torchrun every process runs the script; rank 0 gets the run folder, the other None, one run is made."""
    script = tmp_path / "script.py"
    script.write_text(PYTHON_TRAIN)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(corpus(tmp_path)), str(tmp_path / "cache")]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, output(done)
    assert f"rank 0 returned {tmp_path / 'run'}" in done.stdout and "rank 1 returned None" in done.stdout, output(done)
    assert_one_run(tmp_path / "run", output(done))
