"""The checkout stays clean after the usual commands: what they leave behind is ignored by git."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.helpers import REPO


@pytest.mark.parametrize("left_behind", ["build/lib/minigpt/model.py", "dist/minigpt-0.1.0-py3-none-any.whl"])
def test_what_pip_wheel_leaves_in_the_checkout_is_ignored(left_behind: str):
    root = REPO
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", left_behind], cwd=root)
    assert ignored.returncode == 0, f"{left_behind} would show as untracked"
