"""The package as a user installs it: a wheel in a fresh virtualenv outside the repo, used from another folder.

The wheel is built and installed without the network; the new virtualenv borrows this one's dependencies
(torch, Lightning, ...) through a path file, so what is tested is the wheel itself: its modules, its
bundled configs and its `minigpt` command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.e2e

TINY = [
    "--model.block_size", "32", "--model.n_layer", "1", "--model.n_head", "2", "--model.n_embd", "32",
    "--batch_size", "4", "--val_windows", "4", "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
    "--trainer.accelerator", "cpu", "--samples", "1", "--sample_tokens", "8",
]  # fmt: skip


API_STEP = """
import minigpt
lm = minigpt.load("runs/default")
att = lm.attention("the quick brown fox")
print(len(att._repr_html_()), *att.save("api_maps"))
"""
"""The Python API from the installed wheel: the notebook view and the files need the page shipped in it."""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv holding the minigpt wheel; its bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: building in the repo would leave build/ there, and reuse a stale one
    shutil.copytree(REPO / "minigpt", source / "minigpt", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist"), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (root / "dist").glob("minigpt-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run(
        [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())  # fmt: skip
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-q", str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return venv / "bin"


def command(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(MINIGPT_CACHE=str(cwd / "cache"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PATH=f"{bin_dir}:{env['PATH']}")
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_wheel_trains_generates_inspects_and_evaluates_from_another_folder(installed, tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(400)))
    where = command(installed, tmp_path, "python", "-c", "import minigpt; print(minigpt.__file__)")
    assert str(installed.parent) in where.stdout, where  # the wheel's copy, not the repo's

    steps = [
        ("python", "-m", "minigpt", "--help"),
        ("minigpt", "train", "--list_configs"),
        ("minigpt", "train", "--data", str(corpus), *TINY),
        ("minigpt", "generate", "--ckpt", "runs/default", "--prompt", "line", "--max_new_tokens", "8", "--seed", "1"),
        ("minigpt", "attention", "--ckpt", "runs/default", "--prompt", "the quick brown fox", "--out", "maps"),
        ("minigpt", "eval", "--ckpt", "runs/default", "--data", str(corpus), "--split", "val"),
        ("python", "-c", API_STEP),
    ]
    results = [command(installed, tmp_path, *step) for step in steps]
    for step, done in zip(steps, results):
        assert done.returncode == 0, (step, done.stdout, done.stderr)
    help_text, configs, trained, generated, _, evaluated, from_python = (r.stdout for r in results)
    assert "train" in help_text and "eval" in help_text
    assert "shakespeare_cpu" in configs
    assert "--- sample 1 ---" in trained and (tmp_path / "runs" / "default" / "README.md").is_file()
    assert generated.startswith("line")
    assert (tmp_path / "maps" / "overview.png").is_file()
    assert "bits/byte" in evaluated
    shown, saved, *_ = from_python.split()
    assert int(shown) > 10_000 and (tmp_path / "api_maps" / "attention.html").is_file(), from_python


@pytest.mark.parametrize("module", ["minigpt", "minigpt.cli.main", "minigpt.cli.train", "minigpt.cli.generate",
                                    "minigpt.cli.attention", "minigpt.cli.eval"])  # fmt: skip
def test_no_runnable_module_silently_does_nothing(module):
    done = subprocess.run([sys.executable, "-m", module, "--no_such_option"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error:") and len(done.stderr.splitlines()) == 1, done.stderr
