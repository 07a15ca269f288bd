"""The commands import the library, not each other: no import cycle among the cli modules, and a command imports
another command's module only for its options (generate --attention). Each import runs in a fresh interpreter,
so what another test imported cannot hide a cycle."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import minigpt.cli

CLI_MODULES = sorted(info.name for info in pkgutil.iter_modules(minigpt.cli.__path__, "minigpt.cli."))
ALLOWED = {"minigpt.cli.generate": {"minigpt.cli.attention"}}  # generate --attention takes attention's options
"""The cli modules, besides minigpt.cli.common (parser helpers) and minigpt.cli.stdout, that a cli module may import."""


def cli_modules_imported_by(module: str) -> set[str]:
    """The other cli modules a fresh interpreter holds after importing `module`."""
    probe = f"import sys, {module}\nprint(' '.join(m for m in sys.modules if m.startswith('minigpt.cli.')))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(done.stdout.split()) - {module}


@pytest.fixture(scope="module")
def imports() -> dict[str, set[str]]:
    return {module: cli_modules_imported_by(module) for module in CLI_MODULES}


def test_every_command_module_is_checked():
    assert {"minigpt.cli.attention", "minigpt.cli.eval", "minigpt.cli.generate", "minigpt.cli.common"} <= set(
        CLI_MODULES
    )


def test_no_cli_module_imports_one_that_imports_it(imports):
    cycles = sorted((a, b) for a in imports for b in imports[a] if a in imports.get(b, ()))
    assert not cycles


@pytest.mark.parametrize("module", CLI_MODULES)
def test_a_cli_module_imports_no_other_command_for_library_work(imports, module):
    assert imports[module] <= {"minigpt.cli.common", "minigpt.cli.stdout", *ALLOWED.get(module, ())}


@pytest.mark.parametrize("option", ["--help", "--version"])
def test_top_level_help_loads_no_torch_and_ends_quietly_when_its_reader_has_gone(option):
    # `minigpt --help | head -1`: the reader may be gone before the text is flushed at exit, which printed a
    # BrokenPipeError traceback and exited 1. Here the reader is gone before the command starts.
    probe = (
        "import os, sys\nfrom minigpt.cli import run\nfrom minigpt.cli.main import main\n"
        "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"
        f"code = run(main, [{option!r}])\nsys.stdout.flush()\n"
        "print(code, 'torch' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr.split() == ["0", "False"], done.stderr



def test_eval_on_a_corpus_never_loads_lm_eval(tmp_path, tiny_checkpoint):
    """`minigpt eval --data` must not pay for lm-evaluation-harness's import (seconds): only --tasks loads it."""
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 4)
    probe = (
        "import sys\nfrom minigpt.cli import run\nfrom minigpt.cli.main import main\n"
        f"assert run(main, ['eval', '--ckpt', {str(tiny_checkpoint)!r}, '--data', {str(text)!r}]) == 0\n"
        "print('lm_eval' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.splitlines()[-1] == "False"


def test_loading_pauses_the_collector_and_freezes_what_it_built():
    import gc

    from minigpt.cli import loading

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        with loading():
            assert not gc.isenabled()
            kept = [[i] for i in range(1000)]  # tracked objects made while loading
        assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(kept)
        gc.disable()
        with loading():
            pass
        assert not gc.isenabled()  # a collector the caller turned off stays off
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_command_loads_lightning_without_a_full_collection():
    """Importing Lightning (and torch) makes ~500,000 objects; a full collection while they load scans them
    all (a third of the import time). The train command parses with Lightning's options, so it imports it."""
    probe = (
        "import gc, sys\n"
        "from minigpt.cli.main import main\n"
        "full = []\n"
        "gc.callbacks.append(lambda phase, info: full.append(1) if phase == 'start' and info['generation'] == 2 else None)\n"
        "try:\n"
        "    main(['train', '--print_config'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('lightning' in sys.modules, len(full), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stderr.split()[-2:] == ["True", "0"], done.stderr[-2000:]
