"""What several test modules share: paths, a tiny model config, and ways to run the train command on tiny
data (in-process and as a subprocess, with or without a launcher). Tests import from here, never from each
other; fixtures live in conftest.py."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import random
import resource
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from minigpt.cli import run
from minigpt.cli.train import main
from minigpt.model import GPTConfig

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = ["README.md", "best.ckpt", "config.yaml", "last.ckpt", "loss.png", "metrics.csv", "tb"]
"""What a finished run folder holds."""


def tiny_config(**overrides) -> GPTConfig:
    """A model small enough to train for a few steps in a test."""
    fields = dict(vocab_size=257, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    return GPTConfig(**{**fields, **overrides})


TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(400))


def train_in_process(tmp_path: Path, out: str, *extra: str) -> int:
    """Run train.py's main in-process on a tiny model and corpus."""
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        corpus.write_text(TEXT)
    args = [
        "--data", str(corpus), "--out_dir", str(tmp_path / out), "--cache_dir", str(tmp_path / "cache"),
        "--model.block_size", "32", "--model.n_layer", "2", "--model.n_head", "2", "--model.n_embd", "32",
        "--batch_size", "4", "--val_windows", "8", "--samples", "0", "--optim.warmup_steps", "2",
        "--optim.name", "adamw",  # what these tests assert is written for AdamW (fused); Muon's tests ask for it
        "--trainer.max_steps", "6", "--trainer.val_check_interval", "3", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1",
    ]  # fmt: skip
    return run(main, args + list(extra))


# The distributed and GPU tests run this tiny train command as a subprocess, under each launcher.
STEPS, EVERY = 20, 10
TINY = [
    "--model.block_size", "32", "--model.n_layer", "2", "--model.n_head", "4",
    "--model.n_embd", "64", "--batch_size", "8", "--val_windows", "64", "--sample_tokens", "20",
    "--trainer.max_steps", str(STEPS), "--trainer.val_check_interval", str(EVERY), "--trainer.accelerator", "cpu",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]  # fmt: skip
DDP = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "MINIGPT_RUN")


def environment(**extra: str) -> dict[str, str]:
    """This test's environment without any launcher's variables (pytest may itself run under one)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES and not k.startswith("SLURM_")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def corpus(folder: Path) -> Path:
    """A 300 KB text of random words, the same every time (tests must not depend on files outside the repo)."""
    path = folder / "corpus.txt"
    if not path.exists():
        rng = random.Random(0)
        words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(1, 7))) for _ in range(800)]
        path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(5000)))
    return path


def train_command(tmp_path: Path, *args: str, launcher: tuple[str, ...] = ()) -> list[str]:
    runner = [sys.executable, *launcher] if launcher else [sys.executable]
    data = ["--data", str(corpus(tmp_path)), "--cache_dir", str(tmp_path / "cache")]
    return [*runner, str(REPO / "train.py"), *TINY, *data, *args]


def train_subprocess(tmp_path: Path, *args: str, launcher: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess:
    command = train_command(tmp_path, *args, launcher=launcher)
    return subprocess.run(command, cwd=tmp_path, env=environment(**env), capture_output=True, text=True, timeout=300)


def output(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr


def assert_one_run(folder: Path, text: str, steps: int = STEPS) -> None:
    """One complete run in `folder`, no other run folder beside it, and each line a person reads once."""
    assert sorted(p.name for p in folder.iterdir()) == RUN_FILES
    assert not [p for p in folder.parent.rglob("config.yaml") if p.parent != folder]
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == steps
    for step in range(EVERY, steps + 1, EVERY):
        assert text.count(f"step {step}: val loss") == 1, text
    assert text.count("--- sample 1 ---") == 1 and text.count("--- sample more with") == 1, text
    assert "Child process" not in text  # Lightning's word for a process that exited non-zero
    assert "sync_dist" not in text and "error" not in text.lower(), text


WRITTEN_BEFORE = {
    "source": "data/train.txt",
    "val_source": "data/val.txt",
    "fingerprint": "ab12+cd34",
    "tokenizer": "bytes",
    "val_fraction": 0.0,
    "vocab_size": 257,
    "dtype": "uint16",
    "format_version": 2,
    "documents": 12,
    "train_tokens": 1100,
    "val_tokens": 210,
    "train_bytes": 1089,
    "val_bytes": 209,
    "train_sha256": "1" * 64,
    "val_sha256": "2" * 64,
}


MEMORY_HEADROOM = 4 << 30
"""Bytes of address space one guarded command may add on top of what the test process has."""


class Hang(Exception):
    """A guarded command ran past its time limit."""


@contextlib.contextmanager
def guarded(time_limit_s: int) -> Iterator[None]:
    """A memory ceiling and a time limit for one command run in-process, so a product that tries to allocate an
    enormous model or batch fails (MemoryError / torch's "can't allocate memory") instead of taking the machine
    down, and one that hangs raises `Hang`."""
    with open("/proc/self/statm") as f:
        in_use = int(f.read().split()[0]) * resource.getpagesize()
    previous = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = in_use + MEMORY_HEADROOM
    if previous[1] != resource.RLIM_INFINITY:
        ceiling = min(ceiling, previous[1])

    def timeout(signum, frame):
        raise Hang(f"the command ran longer than {time_limit_s} s")

    old_handler = signal.signal(signal.SIGALRM, timeout)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, previous[1]))
    signal.alarm(time_limit_s)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
        resource.setrlimit(resource.RLIMIT_AS, previous)


def run_captured(
    main: Callable[[Sequence[str]], None], argv: list[str], time_limit_s: int, stdin: str = ""
) -> tuple[int, str, str]:
    """A command's `main` in-process as its entry point runs it (`minigpt.cli.run`), guarded; (exit code,
    stdout, stderr). stdin reads `stdin`; a SystemExit gives its code, as it would to the shell.

    stderr is what the command prints itself. Python warnings are recorded, not printed, and log records never
    reach it (run()'s logging.basicConfig finds a handler already there), under pytest and outside it alike.
    """
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    quiet = logging.NullHandler()
    root.addHandler(quiet)
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with guarded(time_limit_s), warnings.catch_warnings(record=True), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("ignore")
            try:
                code = run(main, argv)
            except SystemExit as exit:  # argparse's own exit for a bad option, as the console script ends
                code = exit.code if isinstance(exit.code, int) else 1
    finally:
        sys.stdin = saved_stdin
        root.removeHandler(quiet)
    return code, out.getvalue(), err.getvalue()


def edited(data: dict, path: str, value) -> dict:
    """A copy of the JSON `data` (a tokenizer.json, a config) with the field at the dotted `path` (list indices as
    numbers) set to `value`."""
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return data


def replace_stopping_at(n: int, stop: BaseException) -> Callable[[str | os.PathLike, str | os.PathLike], None]:
    """An `os.replace` that raises `stop` (a full disk, a Ctrl-C) at its `n`-th call instead of renaming."""
    replace, calls = os.replace, []

    def replace_or_stop(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        calls.append(dst)
        if len(calls) == n:
            raise stop
        replace(src, dst)

    return replace_or_stop
