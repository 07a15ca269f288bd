"""The train command as a person sees it: in a terminal (run under a pseudo-terminal 80 columns wide, its escape
codes rendered by a terminal emulator, pyte, and the screen read back) and in a log file."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.helpers import environment, output, train_command

pyte = pytest.importorskip("pyte")

COLUMNS, ROWS = 80, 200  # tall enough that nothing scrolls off


def lightning_defaults(command: list[str]) -> list[str]:
    """`command` without the options that turn off the bar and the model summary: Lightning's defaults decide."""
    for option in ("--trainer.enable_progress_bar", "--trainer.enable_model_summary"):
        i = command.index(option)
        command = command[:i] + command[i + 2 :]
    return command


def run_in_terminal(tmp_path: Path, *args: str, timeout: float = 120) -> str:
    """The screen (rows, wrapped lines joined) after the tiny train command ran in an 80-column terminal with
    Lightning's defaults for the bar and the model summary."""
    command = lightning_defaults(train_command(tmp_path, *args))
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    env = environment(TERM="xterm", COLUMNS=str(COLUMNS), LINES=str(ROWS))
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdin=child, stdout=child, stderr=child)
    os.close(child)
    written, deadline = bytearray(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([parent], [], [], 0.5)[0]:
            try:
                chunk = os.read(parent, 1 << 16)
            except OSError:  # the child side closed
                break
            if not chunk:
                break
            written += chunk
        elif process.poll() is not None:
            break
    process.kill()
    assert process.wait() == 0, bytes(written).decode(errors="replace")
    os.close(parent)
    screen = pyte.Screen(COLUMNS, ROWS)
    pyte.ByteStream(screen).feed(bytes(written))
    rows = [row.rstrip() for row in screen.display]
    # A row that fills the width continues on the next one: the terminal wrapped it.
    return "".join(row if len(row) == COLUMNS else row + "\n" for row in rows).strip()


def test_a_terminal_shows_every_validation_line_whole_above_a_bar_that_counts_steps(tmp_path):
    screen = run_in_terminal(tmp_path, "--trainer.max_steps", "20", "--trainer.val_check_interval", "10")
    lines = screen.splitlines()
    for step in (10, 20):
        shown = [line for line in lines if line.startswith(f"step {step}: val loss")]
        assert len(shown) == 1, screen
        assert re.fullmatch(rf"step {step}: val loss [\d.]+ nats/token = .* \(training text: [\d.]+\)", shown[0]), screen
    bars = [line for line in lines if line.startswith("step 20/20 |")]
    assert len(bars) == 1, screen  # the finished bar, drawn once
    assert lines.index(bars[0]) > max(i for i, line in enumerate(lines) if "val loss" in line)
    assert "Validation" not in screen and "Epoch" not in screen and "Sanity" not in screen, screen
    assert "--- sample 1 ---" in screen


LIGHTNING_NOISE = ("GPU available", "FLOPs", "Total params", "Trainer.fit", "max_steps=", "LOCAL_RANK")


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "log file"])
def test_lightning_says_nothing_and_the_parameter_count_is_said_once(tmp_path, terminal):
    if terminal:
        said = run_in_terminal(tmp_path)
    else:
        done = subprocess.run(
            lightning_defaults(train_command(tmp_path)), cwd=tmp_path, env=environment(),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, output(done)
        said = output(done)
    assert not [noise for noise in LIGHTNING_NOISE if noise in said], said
    assert len(re.findall(r"parameters", said)) == 1 and "model: 0.12M parameters; run folder:" in said, said
