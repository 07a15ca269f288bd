"""examples/quickstart.ipynb runs top to bottom offline, as a user would run it, and its outputs hold what it
promises: a trained run, a sample, the attention view inline (twice: plain and after ablation) and a score."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from tests.helpers import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = REPO / "examples" / "quickstart.ipynb"


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> list:
    """The notebook's code cells after running it in a fresh kernel in an empty folder (its runs/ lands there)."""
    folder = tmp_path_factory.mktemp("notebook")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MINIGPT_CACHE", str(folder / "cache"))
        env.setenv("OMP_NUM_THREADS", "2")
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def text_of(cell) -> str:
    parts = []
    for out in cell.outputs:
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def html_of(cell) -> str:
    return "".join(out.get("data", {}).get("text/html", "") for out in cell.outputs)


def test_no_cell_fails(executed):
    assert not [out for cell in executed for out in cell.outputs if out.output_type == "error"]


def test_the_run_folder_holds_a_trained_run(executed):
    folder = Path(re.search(r"PosixPath\('([^']+)'\)", text_of(executed[1])).group(1))
    assert {"best.ckpt", "last.ckpt", "config.yaml", "metrics.csv", "loss.png", "README.md"} <= {p.name for p in folder.iterdir()}
    assert {"attention.html", "heads.json", "attention.npz", "importance.png"} <= {p.name for p in (folder / "attention").iterdir()}


def test_the_sample_cell_prints_the_model_and_a_completion(executed):
    printed = text_of(executed[2])
    assert printed.startswith("MiniGPT(") and len(printed.splitlines()) >= 2


@pytest.mark.parametrize("cell", [3, 5])
def test_the_attention_view_is_shown_inline(executed, cell):
    shown = html_of(executed[cell])
    page = html.unescape(re.search(r'srcdoc="([^"]*)"', shown).group(1))
    assert 'id="model-view"' in page and 'id="heatmap"' in page and '"tokens":' in page
    importance = re.search(r'"importance":(null|\{)', page).group(1)
    assert importance == ("null" if cell == 3 else "{")  # ablation adds each head's loss change


def test_the_evaluation_reports_loss_and_bits_per_byte(executed):
    assert re.search(r"pydoc \(val\): [\d,]+ tokens, [\d,]+ bytes: loss \d+\.\d+ nats/token, \d+\.\d+ bits/byte", text_of(executed[-1]))


def test_the_notebook_is_shipped_with_its_outputs():
    """Readers who only open it (on GitHub, in an editor) see what it makes, the attention view included."""
    cells = [cell for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code"]
    assert all(cell.outputs for cell in cells)
    assert "srcdoc=" in html_of(cells[3]) and "srcdoc=" in html_of(cells[5])
