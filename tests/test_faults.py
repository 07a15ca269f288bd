"""Fault injection: the real train.py, killed and interrupted at awkward moments, must never lose work.

After every fault, every checkpoint in the run folder loads (checksum and all), and the run either
resumes to its last step or, when it saved nothing, starts again in the same folder.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from minigpt import checkpoint
from minigpt.cli import loading, run
from minigpt.cli.train import main
from minigpt.training.run_folder import LOCK_NAME, RunFolder, holds_run
from tests.helpers import REPO, RUN_FILES

STEPS = 8
TINY = [
    "--model.block_size", "32", "--model.n_layer", "2", "--model.n_head", "2", "--model.n_embd", "64",
    "--batch_size", "4", "--val_windows", "2", "--samples", "0", "--model.dropout", "0.1",
    "--trainer.max_steps", str(STEPS), "--trainer.val_check_interval", "1", "--trainer.accelerator", "cpu",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]  # fmt: skip
# Tiny models train fastest on one thread; it also keeps several of these processes from fighting.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 6))) for _ in range(500)]
    path = tmp_path_factory.mktemp("corpus") / "words.txt"
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(10)) for _ in range(3000)))
    return path


def train_command(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    cache = run_dir.parent / "cache"
    return [sys.executable, str(REPO / "train.py"), "--data", str(corpus), "--cache_dir", str(cache), "--out_dir", str(run_dir), *TINY, *extra]


def resume_command(run_dir: Path) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), "--resume", str(run_dir)]


def start(command: list[str]) -> subprocess.Popen:
    """Run `command` with its output in files beside the run (pipes nobody reads would fill and block it)."""
    log = Path(command[command.index("--out_dir") + 1]).parent / "train.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=ENV, stdout=out, stderr=subprocess.STDOUT, text=True)
    process.log = log
    return process


def finish(process: subprocess.Popen) -> str:
    process.wait(timeout=120)
    return process.log.read_text()


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> bool:
    """Poll `condition` every millisecond until it holds (True) or the process ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.001)
    raise TimeoutError("the training process neither finished nor reached the awaited state")


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def assert_recoverable(corpus: Path, run_dir: Path) -> None:
    """Every checkpoint loads; the run resumes to its end, or restarts in the same folder if nothing was saved."""
    for path in run_dir.glob("*.ckpt"):
        checkpoint.read(path)  # raises on a truncated, corrupt or foreign file
    command = resume_command(run_dir) if holds_run(run_dir) else train_command(corpus, run_dir)
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert step_of(run_dir / "last.ckpt") == STEPS
    assert sorted(p.name for p in run_dir.iterdir()) == RUN_FILES


def kill_at_random(corpus: Path, run_dir: Path, rng: random.Random) -> None:
    process = start(train_command(corpus, run_dir))
    # Past start-up (imports, data) into training, where checkpoints are written at every step.
    wait_for(lambda: (run_dir / "config.yaml").exists(), process)
    time.sleep(rng.uniform(0, 2.5))
    process.kill()
    process.wait()
    assert_recoverable(corpus, run_dir)


def test_kill_9_at_random_moments_never_loses_a_checkpoint(tmp_path, corpus):
    rng = random.Random(int(os.environ.get("MINIGPT_FAULT_SEED", "1")))
    for attempt in range(2):
        kill_at_random(corpus, tmp_path / f"run{attempt}", rng)


@pytest.mark.slow
def test_kill_9_twenty_times(tmp_path, corpus):
    rng = random.Random(20)
    for attempt in range(20):
        kill_at_random(corpus, tmp_path / f"run{attempt}", rng)


def test_kill_9_in_the_middle_of_a_checkpoint_write(tmp_path, corpus):
    """Killed while a checkpoint's temporary file is being written: the old checkpoint stays whole."""
    caught = False
    for attempt in range(3):
        run_dir = tmp_path / f"run{attempt}"
        process = start(train_command(corpus, run_dir))
        caught = wait_for(lambda: any(run_dir.glob(checkpoint.TEMP_GLOB)), process)
        process.kill()
        process.wait()
        assert_recoverable(corpus, run_dir)
        if caught:
            break
    assert caught, "no checkpoint write was ever in progress when polled"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_saves_the_state_exits_128_plus_signal_and_says_how_to_resume(tmp_path, corpus, signum):
    run_dir = tmp_path / "run"
    process = start(train_command(corpus, run_dir, "--trainer.max_steps", "1000"))
    assert wait_for(lambda: (run_dir / "last.ckpt").exists(), process)
    process.send_signal(signum)
    err = finish(process)
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("stopped by " + ("Ctrl-C" if signum == signal.SIGINT else "SIGTERM"))
    assert f"--resume {run_dir.resolve()}" in last_line
    stopped_at = int(last_line.split("; step ")[1].split()[0])
    assert step_of(run_dir / "last.ckpt") == stopped_at
    assert not (run_dir / LOCK_NAME).exists()


def test_a_run_or_resume_into_a_folder_in_use_is_refused_and_touches_nothing(tmp_path, corpus, capsys):
    run_dir = tmp_path / "run"
    assert run(main, train_command(corpus, run_dir, "--trainer.max_steps", "2")[2:]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    (run_dir / "last.ckpt").unlink()  # so that only the lock, not "holds a run", can refuse the fresh run
    with RunFolder(run_dir).acquire():  # what a live training process holds (an flock: another open file)
        assert run(main, train_command(corpus, run_dir)[2:]) == 2
        assert run(main, ["--resume", str(run_dir / "best.ckpt")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert all("is in use by another training run" in line for line in errors[-2:])
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == {k: v for k, v in before.items() if k != "last.ckpt"}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_during_preparation_exits_cleanly_and_leaves_no_temporary_files(tmp_path, corpus, monkeypatch, signum, capsys):
    from minigpt.data import prepare

    make_encoder = prepare._array_encoder

    def signalling_encoder(*args, **kwargs):
        encode = make_encoder(*args, **kwargs)

        def signal_mid_batch(texts):
            os.kill(os.getpid(), signum)
            return encode(texts)

        return signal_mid_batch

    monkeypatch.setattr(prepare, "_array_encoder", signalling_encoder)
    assert run(main, train_command(corpus, tmp_path / "run")[2:]) == 128 + signum
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]


def test_ctrl_c_during_bpe_training_exits_130_without_a_traceback(tmp_path, corpus, monkeypatch, capsys):
    from minigpt.data import prepare

    split = prepare.split_documents

    def interrupted_after_one_document(*args, **kwargs):
        for n, item in enumerate(split(*args, **kwargs)):
            if n == 1:
                os.kill(os.getpid(), signal.SIGINT)  # arrives while rustbpe is pulling documents
            yield item

    monkeypatch.setattr(prepare, "split_documents", interrupted_after_one_document)
    assert run(main, train_command(corpus, tmp_path / "run", "--tokenizer", "bpe:300")[2:]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "SystemError" not in err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_during_generation_exits_128_plus_signal_with_one_line(tiny_checkpoint, signum):
    command = [sys.executable, str(REPO / "generate.py"), "--ckpt", str(tiny_checkpoint), "--prompt", "a",
               "--max-new-tokens", "1000000", "--temperature", "0", "--device", "cpu"]  # fmt: skip
    with subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        process.stdout.read(50)  # generation is under way
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    assert err.strip().startswith("stopped by ") and err.count("\n") == 1, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_while_a_command_loads_waits_for_the_imports_then_stops_it(signum, capsys):
    """Raised inside the imports, it was swallowed by one (the command ran on and exited 0) or crossed torch's C++
    (exit 134): now the imports finish and the command stops before it starts."""
    done = []

    def command(argv):
        with loading():
            os.kill(os.getpid(), signum)
            done.append("imports")
        done.append("command")

    assert run(command, []) == 128 + signum
    assert done == ["imports"]
    assert capsys.readouterr().err == f"stopped by {'Ctrl-C' if signum == signal.SIGINT else 'SIGTERM'}\n"


def test_a_signal_that_a_library_swallows_still_sets_the_exit_code(capsys):
    def command(argv):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:  # what an import inside torch did with it
            pass

    assert run(command, []) == 143
    assert capsys.readouterr().err == "stopped by SIGTERM\n"


def test_a_signal_inside_a_finalizer_stops_the_command_with_one_line(capsys):
    """Raised inside a weakref callback or __del__, Python only printed "Exception ignored ... KeyboardInterrupt"
    with a traceback, and the command ran to its end."""
    done = []

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the handler runs here, inside __del__

    def command(argv):
        Finalized()
        time.sleep(5)
        done.append("ran on")

    assert run(command, []) == 143
    assert done == [] and capsys.readouterr().err == "stopped by SIGTERM\n"


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 3 MB tmpfs: room for two of these checkpoints, not three."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", str(disk)], capture_output=True)


def train_on(disk: Path, corpus: Path, *extra: str) -> subprocess.CompletedProcess:
    """Train into `disk`/run, the data's shards in a cache beside it, until the disk fills."""
    command = train_command(corpus, disk / "run", "--trainer.max_steps", "40", "--trainer.val_check_interval", "5", *extra)
    command[command.index("--cache_dir") + 1] = str(disk.parent / "cache")
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)


def test_a_disk_that_fills_during_training_keeps_the_previous_checkpoint(small_disk, corpus):
    """A real full disk: one line, exit 2, last.ckpt intact."""
    run_dir, done = small_disk / "run", train_on(small_disk, corpus)
    assert done.returncode == 2, done.stderr[-2000:]
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("error: training stopped: no space left on the device while writing"), message
    assert message.endswith(f"step 5 is saved: continue with minigpt train --resume {run_dir}"), message
    assert step_of(run_dir / "last.ckpt") == 5
    checkpoint.read(run_dir / "last.ckpt")
    assert not list(run_dir.glob(checkpoint.TEMP_GLOB)) and not (run_dir / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_disk_that_fills_under_ddp_is_one_line_from_rank_0_alone(small_disk, corpus):
    """Rank 0 alone writes, and alone met the full disk: rank 1 then printed a transport error's traceback (~75 lines)."""
    done = train_on(small_disk, corpus, "--trainer.devices", "2", "--trainer.strategy", "ddp")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and done.stderr.count("error") == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: training stopped: no space left on the device")


@pytest.mark.parametrize("out", ["nl\nlink", "cr\rlink", "ls\u2028link"])
def test_a_user_error_stays_one_line_when_a_name_holds_a_line_break(tmp_path, capsys, out):
    # Paths printed unquoted (export's, the run folder's, the cache's) broke the one line at a newline in a name.
    (tmp_path / out).symlink_to(tmp_path / f"{out}_target")
    assert run(main, ["--data", "x.txt", "--out_dir", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("choose another --out_dir\n") and "\r" not in err and "\u2028" not in err
    assert "link" in err and not (tmp_path / f"{out}_target").exists()


def test_a_save_from_python_inside_a_command_keeps_the_signal_the_command_received():
    """`Attention.save` routes signals itself (a Ctrl-C in a matplotlib callback was swallowed from Python); inside
    a command that already does, it must not forget a signal the command received before."""
    from minigpt import signals

    with signals.installed():
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        with signals.installed():
            assert signals.received() == signal.SIGTERM
        assert signals.received() == signal.SIGTERM


def test_a_command_in_another_thread_never_takes_the_main_threads_signal():
    """A notebook trains in a thread and saves an attention report in the main one: the Ctrl-C meant for the save
    was only recorded (the training was deferring signals), the save went on, and the training stopped instead."""
    import threading

    from minigpt import signals

    seen, started, done = [], threading.Event(), threading.Event()

    def training() -> None:
        with signals.installed(), signals.deferred():
            started.set()
            done.wait(10)
            seen.append(signals.received())

    thread = threading.Thread(target=training)
    thread.start()
    started.wait()
    try:
        with pytest.raises(KeyboardInterrupt), signals.installed():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        done.set()
        thread.join()
    assert seen == [None]
