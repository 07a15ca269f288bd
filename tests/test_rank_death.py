"""A process of a DDP run under Lightning's launcher that dies (``kill -9``) stops the run with one line from the
survivor: which rank died, which step is saved, and the --resume command; no gloo traceback, a non-zero exit."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import DDP, environment, train_command

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def ranks_started_by(pid: int) -> list[int]:
    """The processes Lightning's launcher started from `pid`: its children that run train.py too."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):
            if b"train.py" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def start_ddp(tmp_path: Path) -> subprocess.Popen:
    command = train_command(tmp_path, *DDP, "--out_dir", "run", "--samples", "0", "--trainer.max_steps", "100000")
    log = (tmp_path / "train.log").open("w")
    return subprocess.Popen(command, cwd=tmp_path, env=environment(), stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_until(condition, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "training ended before the awaited state"
        assert time.monotonic() < deadline, "training never reached the awaited state"
        time.sleep(0.05)


def test_a_killed_rank_1_leaves_one_line_from_rank_0_naming_it_and_the_resume(tmp_path):
    process = start_ddp(tmp_path)
    try:
        wait_until(lambda: (tmp_path / "run" / "last.ckpt").exists() and ranks_started_by(process.pid), process)
        [rank_1] = ranks_started_by(process.pid)
        os.kill(rank_1, signal.SIGKILL)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = (tmp_path / "train.log").read_text()
    assert process.returncode == 2, text[-3000:]
    assert "Traceback" not in text and "by peer" not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    match = re.fullmatch(r"error: rank 1 \(pid (\d+)\) was killed by SIGKILL, so training stopped; step (\d+) is saved: "
                         r"continue with minigpt train --resume (.+)", last)  # fmt: skip
    assert match, last
    assert int(match[1]) == rank_1 and Path(match[3]) == (tmp_path / "run").resolve()
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)["global_step"] == int(match[2])
