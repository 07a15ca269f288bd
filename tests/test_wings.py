"""The wing rule: only minigpt.training (and the train command) import Lightning; the core, data, hf and
inspection packages, and the public API short of `train`, never do; only minigpt.harness imports lm_eval. `import minigpt` imports neither torch nor
Lightning, and no library module imports the command line (arrows point from cli/ down, never back). Each import
runs in a fresh interpreter, so nothing another test imported can hide a violation."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import minigpt
import minigpt.cli

LIGHTNING_FREE = sorted(
    info.name
    for info in pkgutil.walk_packages(minigpt.__path__, "minigpt.")
    if not info.name.startswith(("minigpt.training", "minigpt.cli"))
) + ["minigpt.training", "minigpt.training.config", "minigpt.training.options", "minigpt.training.launch"]


LIBRARY = sorted(
    info.name for info in pkgutil.walk_packages(minigpt.__path__, "minigpt.")
    if not info.name.startswith(("minigpt.cli", "minigpt.__main__"))
)  # fmt: skip


def modules_after(code: str) -> set[str]:
    """The names of the modules a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(done.stdout.split())


def imported_after(code: str) -> set[str]:
    """The top-level names of the modules a fresh interpreter holds after running `code`."""
    return {name.split(".")[0] for name in modules_after(code)}


def test_no_library_module_imports_the_command_line():
    code = "\n".join(f"import {module}" for module in LIBRARY)
    assert "minigpt.training.run" in LIBRARY and not {m for m in modules_after(code) if m.startswith("minigpt.cli")}


def test_the_wing_rule_covers_every_package():
    assert {"minigpt.api", "minigpt.data.prepare", "minigpt.hf.export", "minigpt.inspection.report"} <= set(LIGHTNING_FREE)


@pytest.mark.parametrize("module", LIGHTNING_FREE)
def test_a_module_outside_the_training_wing_never_imports_lightning(module):
    assert "lightning" not in imported_after(f"import {module}")


def test_the_public_api_short_of_train_never_imports_lightning():
    names = ", ".join(n for n in minigpt.__all__ if n not in ("__version__", "train"))
    assert "lightning" not in imported_after(f"from minigpt import {names}")


def test_import_minigpt_imports_neither_torch_nor_lightning():
    assert not {"torch", "lightning"} & imported_after("import minigpt")


def test_only_the_harness_module_imports_lm_eval():
    """lm-evaluation-harness is an optional extra that takes seconds to import: no other module, command included,
    may load it."""
    commands = [info.name for info in pkgutil.iter_modules(minigpt.cli.__path__, "minigpt.cli.")]
    others = [module for module in LIBRARY if module != "minigpt.harness"] + commands
    assert "lm_eval" not in imported_after("\n".join(f"import {module}" for module in others))
    assert "lm_eval" in imported_after("import minigpt.harness")


def test_the_training_wing_is_where_lightning_is():
    assert "lightning" in imported_after("import minigpt.training.run")
