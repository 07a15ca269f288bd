"""The attention files (minigpt.inspection.report) as written by ``python -m minigpt.cli.attention`` from a real checkpoint."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import matplotlib.image
import numpy as np
import pytest
import torch

import minigpt
from minigpt import checkpoint, staging
from minigpt.cli import run
from minigpt.cli.attention import IMPORTANCE_TITLE, STAT_TITLES, main
from minigpt.errors import MiniGPTError
from minigpt.inspection import heatmaps, report
from tests.helpers import REPO, environment, replace_stopping_at

PROMPT = "To be, or not to be:\n\tthat is"  # 29 byte tokens, within block_size 32


def attention_cli(*args: str) -> int:
    """Run the command in-process; return its exit code, argparse's usage errors included."""
    try:
        return run(main, list(args))
    except SystemExit as exit_:
        return exit_.code


@pytest.fixture
def out_dir(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    out = tmp_path / "maps"
    assert attention_cli("--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(out)) == 0
    return out


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels of a PNG, read back with matplotlib."""
    height, width = matplotlib.image.imread(path).shape[:2]
    return width, height


def pixels(inches: tuple[float, float]) -> tuple[int, int]:
    return round(inches[0] * heatmaps.DPI), round(inches[1] * heatmaps.DPI)


def embedded_data(html: str) -> dict:
    block = re.search(r'<script id="attention-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(block.group(1).replace("<\\/", "</"))


def test_cli_writes_every_file(out_dir: Path) -> None:
    names = {"overview.png", "layer_0.png", "layer_1.png", "attention.html", "attention.npz", "heads.json"}
    assert {p.name for p in out_dir.iterdir()} == names


def test_pngs_have_the_expected_size(out_dir: Path) -> None:
    T = len(PROMPT)
    assert png_size(out_dir / "overview.png") == pixels(heatmaps.overview_figure_size(2, 2))
    assert png_size(out_dir / "layer_0.png") == pixels(heatmaps.layer_figure_size(2, T))
    # Large enough to read: at least 10 pixels per token along each heatmap.
    assert heatmaps.panel_inches(T) * heatmaps.DPI >= 10 * T


def test_npz_holds_raw_float32_weights_and_tokens(out_dir: Path) -> None:
    saved = np.load(out_dir / "attention.npz")
    T = len(PROMPT)
    assert saved["weights"].dtype == np.float32
    assert saved["weights"].shape == (2, 2, T, T)
    assert "".join(saved["tokens"]) == PROMPT
    np.testing.assert_allclose(saved["weights"].sum(-1), 1.0, atol=1e-5)


def test_heads_json_scores_every_head(out_dir: Path) -> None:
    record = json.loads((out_dir / "heads.json").read_text())
    assert {(h["layer"], h["head"]) for h in record["heads"]} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for head in record["heads"]:
        assert 0 <= head["previous_token"] <= 1 and 0 <= head["induction"] <= 1 and head["entropy"] > 0
    assert set(record["top"]) == {"entropy", "previous_token", "first_token", "induction"}


def test_cli_prints_the_top_heads_of_each_kind(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    args = ["--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path), "--top-heads", "2"]
    assert attention_cli(*args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == list(STAT_TITLES.values())
    assert all(len(re.findall(r"L\dH\d", line)) == 2 for line in lines)


def test_html_embeds_tokens_and_weights(out_dir: Path) -> None:
    data = embedded_data((out_dir / "attention.html").read_text(encoding="utf-8"))
    saved = np.load(out_dir / "attention.npz")
    assert data["tokens"] == list(saved["tokens"])
    assert data["layers"] == [0, 1] and data["heads"] == ["0", "1"]
    np.testing.assert_allclose(np.array(data["weights"]), saved["weights"], atol=1e-5)
    heads = json.loads((out_dir / "heads.json").read_text())["heads"]
    assert [data["stats"]["induction"][h["layer"]][h["head"]] for h in heads] == [h["induction"] for h in heads]


def test_html_makes_no_network_request(out_dir: Path) -> None:
    html = (out_dir / "attention.html").read_text(encoding="utf-8")
    assert not re.search(r"https?://", html)
    assert not re.search(r"\b(src|href)\s*=", html)
    assert "fetch(" not in html and "XMLHttpRequest" not in html and "import(" not in html


@pytest.mark.parametrize("prompt", ["a</script><b>", "a<!--<script>b"])  # the second swallowed the page's script
def test_html_survives_a_token_that_closes_or_hides_a_script(tiny_checkpoint: Path, tmp_path: Path, prompt: str) -> None:
    assert attention_cli("--ckpt", str(tiny_checkpoint), "--prompt", prompt, "--out", str(tmp_path)) == 0
    html = (tmp_path / "attention.html").read_text(encoding="utf-8")
    assert "".join(embedded_data(html)["tokens"]) == prompt
    template = report.page_template()
    for markup in ("<script", "</script", "<!--"):
        assert html.count(markup) == template.count(markup)


def test_layers_heads_and_per_head_select_the_pngs(tiny_checkpoint: Path, tmp_path: Path) -> None:
    args = ["--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path), "--layers", "1", "--heads", "0"]
    assert attention_cli(*args, "--per-head") == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["layer_1_head_0.png", "overview.png"]
    assert png_size(tmp_path / "overview.png") == pixels(heatmaps.overview_figure_size(1, 1))


@pytest.mark.parametrize("how", ["mean", "rollout"])
def test_aggregate_draws_one_map_per_layer_and_saves_it(tiny_checkpoint: Path, tmp_path: Path, how: str) -> None:
    args = ["--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path), "--aggregate", how]
    assert attention_cli(*args) == 0
    assert png_size(tmp_path / "overview.png") == pixels(heatmaps.overview_figure_size(2, 1))
    saved = np.load(tmp_path / "attention.npz")
    assert saved[how].shape == (2, len(PROMPT), len(PROMPT))
    data = embedded_data((tmp_path / "attention.html").read_text(encoding="utf-8"))
    assert data["heads"] == ["0", "1", how]
    np.testing.assert_allclose(np.array(data["weights"])[:, 2], saved[how], atol=1e-5)


def test_mean_aggregate_over_selected_heads(tiny_checkpoint: Path, tmp_path: Path) -> None:
    args = ["--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path), "--heads", "1"]
    assert attention_cli(*args, "--aggregate", "mean") == 0
    saved = np.load(tmp_path / "attention.npz")
    np.testing.assert_allclose(saved["mean"], saved["weights"][:, 1], atol=1e-6)


def test_prompt_longer_than_block_size_keeps_the_last_tokens(tiny_checkpoint: Path, tmp_path: Path) -> None:
    prompt = "x" * 10 + PROMPT  # 39 tokens, block_size 32
    assert attention_cli("--ckpt", str(tiny_checkpoint), "--prompt", prompt, "--out", str(tmp_path)) == 0
    assert "".join(np.load(tmp_path / "attention.npz")["tokens"]) == prompt[-32:]


@pytest.mark.parametrize(
    "layers, heads, n_tokens, rc",
    [(2, 4, 48, {}), (3, 1, 5, {}), (2, 6, 70, {}), (2, 2, 1, {}),
     (3, 2, 12, {"axes.grid": True, "xtick.direction": "in", "axes.axisbelow": False})],
)  # fmt: skip
def test_layer_pixels_are_each_layers_own_figure_to_the_byte(layers: int, heads: int, n_tokens: int, rc: dict) -> None:
    # Drawn once and redrawn per layer: every pixel must be what drawing that layer's figure afresh gives,
    # titles that differ per layer and a user's matplotlib settings (grid lines over the maps, ticks inside) too.
    torch.manual_seed(0)
    maps = torch.softmax(torch.randn(layers, heads, n_tokens, n_tokens) * 3, -1).tril()
    tokens = [" \n" if i % 5 == 0 else chr(97 + i % 26) * (1 + i % 3) for i in range(n_tokens)]
    titles = [[f"layer {layer} · head {head}" + "!" * layer for head in range(heads)] for layer in range(layers)]
    with matplotlib.rc_context(rc):
        fresh = [heatmaps.figure_pixels(heatmaps.layer_figure(m, t, tokens)) for m, t in zip(maps, titles)]
        redrawn = [pixels[..., :3] for pixels in heatmaps.layer_pixels(maps, titles, tokens)]
    assert len(redrawn) == layers
    assert not list(heatmaps.layer_pixels(maps[:0], [], tokens))
    for layer, (expected, got) in enumerate(zip(fresh, redrawn)):
        assert np.array_equal(expected, got), f"layer {layer}: {(expected != got).any(-1).sum()} pixels differ"


def test_saved_pixels_are_the_file_matplotlib_writes(tmp_path: Path) -> None:
    maps = torch.softmax(torch.randn(2, 1, 9, 9), -1)
    heatmaps.save(heatmaps.layer_figure(maps[1], ["second"], list("abcdefghi")), tmp_path / "figure.png")
    pixels = list(heatmaps.layer_pixels(maps, [["first"], ["second"]], list("abcdefghi")))[1]
    heatmaps.save_pixels(pixels, tmp_path / "pixels.png")
    assert (tmp_path / "pixels.png").read_bytes() == (tmp_path / "figure.png").read_bytes()


def test_visible_whitespace() -> None:
    assert heatmaps.visible(" a\n\tb") == "·a↵→b"


def test_long_sequences_label_every_kth_token() -> None:
    assert heatmaps.label_step(64) == 1
    assert len(range(0, 200, heatmaps.label_step(200))) <= heatmaps.MAX_LABELS


def _no_payload(path: Path) -> None:
    torch.save({"state_dict": {}}, path)


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a checkpoint")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--layers", "2"], "out of range"),
        (["--heads", "0,5"], "out of range"),
        (["--heads", "-1"], "out of range"),
        (["--layers", "one"], "comma-separated"),
        (["--layers", "0\n1"], "comma-separated"),  # a newline in what is echoed must not break the line
        (["--layers", "1\n,7"], "out of range"),
        (["--out", "/dev/null/maps\n"], "is a file, not a folder"),
        (["--prompt", ""], "prompt is empty"),
        (["--ablate", "--prompt", "a"], "nothing to predict"),
        (["--data", "{tmp}/text.txt"], "add --ablate"),
        (["--ablate_windows", "3"], "add --data"),
        (["--ablate", "--data", "{tmp}/nowhere.txt"], "--data '{tmp}/nowhere.txt': corpus"),
        (["--ablate", "--data", "{tmp}/binary.dat"], "is binary"),
        (["--ablate", "--data", "{tmp}/empty"], "has no text files"),
        (["--ablate", "--data", "{tmp}/text.txt", "--layers", "5"], "out of range"),
    ],
)
def test_bad_options_exit_2_with_one_line(tiny_checkpoint: Path, tmp_path: Path, capsys, extra, needle) -> None:
    (tmp_path / "text.txt").write_text(PROMPT * 20)
    (tmp_path / "binary.dat").write_bytes(b"\0\1\2" * 100)
    (tmp_path / "empty").mkdir()
    extra = [arg.format(tmp=tmp_path) for arg in extra]
    args = ["--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path / "o"), *extra]
    assert attention_cli(*args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle.format(tmp=tmp_path) in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--top-heads", "0"], "--top_heads: must be at least 1"),
        (["--top-heads", "-1"], "--top_heads: must be at least 1"),
        (["--device", "bogus"], "--device: invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tiny_checkpoint: Path, tmp_path: Path, capsys, extra, needle) -> None:
    args = ["--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path / "o"), *extra]
    assert attention_cli(*args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_gpu_exits_2_with_one_line(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    args = ["--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path / "o"), "--device", "cuda"]
    assert attention_cli(*args) == 2
    assert "not available" in capsys.readouterr().err


ROOT_WRITES_ANYWHERE = pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")


@pytest.mark.parametrize(
    "where",
    ["a file", "under a file", "a dangling link", "under a dangling link",
     pytest.param("in a read-only folder", marks=ROOT_WRITES_ANYWHERE)],
)  # fmt: skip
def test_out_that_cannot_be_a_folder_exits_2_before_loading(
    tiny_checkpoint: Path, tmp_path: Path, capsys, where: str
) -> None:
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "locked").mkdir(mode=0o555)
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    out = {"a file": "file", "under a file": "file/maps", "in a read-only folder": "locked/maps", "a dangling link": "link",
           "under a dangling link": "link/maps"}[where]  # fmt: skip
    with mock.patch.object(checkpoint, "load", side_effect=AssertionError("loaded before checking --out")):
        assert attention_cli("--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path / out)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    expected = {"in a read-only folder": "not writable", "a dangling link": "which does not exist; pass a folder",
                "under a dangling link": "which does not exist; pass a folder"}  # fmt: skip
    assert expected.get(where, "is a file, not a folder") in err


def test_saving_under_a_dangling_link_makes_nothing(tiny_checkpoint: Path, tmp_path: Path) -> None:
    # Making link/maps would make the link's target (an unmounted disk's folder, say): a notebook's save refuses too.
    (tmp_path / "link").symlink_to(tmp_path / "unmounted" / "disk")
    analysis = minigpt.load(tiny_checkpoint).attention(PROMPT)
    with pytest.raises(MiniGPTError, match="/link' is a link to '.*/unmounted/disk', which does not exist; pass a folder"):
        analysis.save(tmp_path / "link" / "maps")
    assert not (tmp_path / "unmounted").exists()


def test_full_stdout_exits_2_with_one_line(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    with open("/dev/full", "w") as full, mock.patch.object(sys, "stdout", full):
        assert attention_cli("--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path)) == 2
    assert capsys.readouterr().err.endswith("error: cannot write to standard output: No space left on device\n")


@pytest.mark.parametrize("make", [_no_payload, _garbage, None])
def test_bad_checkpoints_exit_2_with_one_line(tmp_path: Path, capsys, make) -> None:
    path = tmp_path / "bad.ckpt"
    if make is not None:
        make(path)
    assert attention_cli("--ckpt", str(path), "--prompt", PROMPT, "--out", str(tmp_path / "o")) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_token_strings_rebuild_the_prompt(tiny_checkpoint: Path) -> None:
    loaded = checkpoint.load(tiny_checkpoint)
    ids = loaded.tokenizer.encode_ordinary(PROMPT)
    assert "".join(report.token_strings(loaded.tokenizer, ids)) == PROMPT


def test_a_run_that_fails_to_write_leaves_the_folder_as_it_was(tiny_checkpoint: Path, out_dir: Path, capsys) -> None:
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    with mock.patch.object(report, "write_npz", side_effect=OSError(28, "No space left on device")):
        assert attention_cli("--ckpt", str(tiny_checkpoint), "--prompt", "other text", "--out", str(out_dir)) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before  # no staging folder left either


def test_a_name_taken_by_a_folder_is_refused_before_any_file_is_replaced(tiny_checkpoint: Path, out_dir: Path, capsys) -> None:
    # The files were moved in one by one: the report's PNGs and page were replaced, then heads.json failed.
    (out_dir / "heads.json").unlink()
    (out_dir / "heads.json").mkdir()
    before = {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()}
    assert attention_cli("--ckpt", str(tiny_checkpoint), "--prompt", "other text", "--out", str(out_dir)) == 2
    assert "its heads.json is a folder; move it away" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in out_dir.iterdir() if p.is_dir()) == ["heads.json"]


@pytest.mark.parametrize(
    ("stop", "code", "said"),
    [(OSError(28, "No space left on device"), 2, "No space left on device"), (KeyboardInterrupt(), 130, "stopped by Ctrl-C")],
    ids=["full-disk", "ctrl-c"],
)  # fmt: skip
def test_a_move_that_stops_part_way_puts_the_earlier_report_back(tiny_checkpoint, out_dir, capsys, stop, code, said) -> None:
    """A signal skipped the undo, and the files set aside were deleted with the temporary folder: a mix."""
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    with mock.patch.object(report.os, "replace", replace_stopping_at(5, stop)):
        assert attention_cli("--ckpt", str(tiny_checkpoint), "--prompt", "other text", "--out", str(out_dir)) == code
    assert said in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


KILLED_MID_MOVE = """
import os, sys
import minigpt
from minigpt.inspection import report

replace, calls = os.replace, []
def killed_on_the_fifth(src, dst):
    calls.append(dst)
    if len(calls) == 5:
        os._exit(9)  # as kill -9: no cleanup of any kind
    replace(src, dst)
report.os.replace = killed_on_the_fifth
minigpt.load(sys.argv[1]).attention("other text").save(sys.argv[2])
"""


def test_a_save_killed_mid_move_is_undone_by_the_next_one(tiny_checkpoint: Path, out_dir: Path) -> None:
    """It left some new files in and the replaced ones in its temporary folder, which the next save deleted."""
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_MOVE, str(tiny_checkpoint), str(out_dir)], cwd=REPO, env=environment())
    assert killed.returncode == 9
    assert {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()} != before  # a mix
    staging.sweep(out_dir, "attention", report.STAGING_NAME, lambda dead: staging.undo_unfinished(dead, out_dir))  # as a save
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


def test_a_killed_runs_temporary_folder_is_swept_and_a_live_ones_is_kept(tiny_checkpoint: Path, out_dir: Path) -> None:
    dead, live = out_dir / ".report.0123456789abcdef.attention.tmp", out_dir / ".report.fedcba9876543210.attention.tmp"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "overview.png").write_bytes(b"half")
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a running save holds
        assert attention_cli("--ckpt", str(tiny_checkpoint), "--prompt", "other text", "--out", str(out_dir)) == 0
        assert not dead.exists() and live.exists()
    finally:
        os.close(fd)


def test_a_failed_save_into_a_folder_it_made_keeps_what_others_put_there(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """It removed the whole folder it had made, with another run's report or a user's notes in it."""
    out = tmp_path / "new"

    def someone_writes_then_disk_fills(*args):
        (out / "notes.txt").write_text("mine")
        raise OSError(28, "No space left on device")

    with mock.patch.object(report, "write_npz", someone_writes_then_disk_fills):
        assert attention_cli("--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(out)) == 2
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_users_folder_named_like_a_temporary_one_is_left_alone(tiny_checkpoint: Path, out_dir: Path) -> None:
    mine = out_dir / ".my.fedcba9876543210.attention.tmp"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert attention_cli("--ckpt", str(tiny_checkpoint), "--prompt", "other text", "--out", str(out_dir)) == 0
    assert (mine / "notes.txt").read_text() == "mine"


def test_ctrl_c_removes_the_folders_it_made(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with mock.patch.object(report, "write_npz", side_effect=KeyboardInterrupt):
        assert attention_cli("--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path / "a" / "b")) == 130
    assert not (tmp_path / "a").exists()


def test_a_new_folder_that_fails_to_be_written_is_not_left_behind(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with mock.patch.object(report, "write_npz", side_effect=OSError(28, "No space left on device")):
        assert attention_cli("--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path / "new")) == 2
    assert not (tmp_path / "new").exists()


def test_ablate_scores_every_head_in_heads_json_the_page_importance_png_and_stdout(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    args = ["--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path), "--top-heads", "2"]
    assert attention_cli(*args, "--ablate") == 0
    record = json.loads((tmp_path / "heads.json").read_text())
    changes = {(h["layer"], h["head"]): h["loss_change"] for h in record["heads"]}
    assert len(changes) == 4 and all(isinstance(c, float) for c in changes.values())
    assert record["ablation"]["on"] == "the prompt" and record["ablation"]["tokens"] == len(PROMPT) - 1
    best = max(changes, key=changes.get)
    assert (record["top"]["loss_change"][0]["layer"], record["top"]["loss_change"][0]["head"]) == best
    data = embedded_data((tmp_path / "attention.html").read_text(encoding="utf-8"))
    assert data["importance"]["loss_change"][best[0]][best[1]] == changes[best]
    assert png_size(tmp_path / "importance.png")[0] >= heatmaps.IMPORTANCE_MIN_WIDTH * heatmaps.DPI
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith(f"{IMPORTANCE_TITLE}: L{best[0]}H{best[1]} {changes[best]:+.3f}")
    assert "on the prompt: 28 tokens" in lines[-1]


def test_without_ablate_there_is_no_importance(out_dir: Path) -> None:
    assert not (out_dir / "importance.png").exists()
    assert "ablation" not in json.loads((out_dir / "heads.json").read_text())
    assert embedded_data((out_dir / "attention.html").read_text(encoding="utf-8"))["importance"] is None


def test_ablate_on_data_measures_the_validation_text_minigpt_eval_scores(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    from minigpt.cli import eval as evaluate_cli

    text = tmp_path / "text.txt"
    text.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(60)))
    args = ["--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path / "o"), "--ablate"]
    assert attention_cli(*args, "--data", str(text), "--ablate_windows", "100000") == 0
    ablated = json.loads((tmp_path / "o" / "heads.json").read_text())["ablation"]
    capsys.readouterr()
    assert run(evaluate_cli.main, ["--ckpt", str(tiny_checkpoint), "--data", str(text), "--split", "val"]) == 0
    evaluated = capsys.readouterr().out
    assert ablated["on"] == f"the val split of {text}"
    assert f"{ablated['tokens']:,} tokens" in evaluated
    assert f"loss {ablated['base_loss']:.4f} nats/token" in evaluated

    assert attention_cli(*args, "--data", str(text), "--ablate_windows", "3") == 0
    sampled = json.loads((tmp_path / "o" / "heads.json").read_text())["ablation"]
    assert sampled["on"] == f"3 windows of the val split of {text}" and sampled["tokens"] < ablated["tokens"]


def test_a_failed_ablation_overwrites_nothing(tiny_checkpoint: Path, out_dir: Path, capsys) -> None:
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    args = ["--ckpt", str(tiny_checkpoint), "--prompt", "other", "--out", str(out_dir), "--ablate"]
    assert attention_cli(*args, "--data", str(out_dir / "missing.txt")) == 2
    assert "--data" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


def test_control_characters_and_glyphs_the_font_lacks_draw_without_warnings(tmp_path):
    """A bell or escape in the text drew as nothing with a 'Glyph 7 missing from font' warning per character on
    stderr; an emoji still has no glyph, and draws as a box, quietly."""
    import warnings

    assert heatmaps.visible("a\x07b\x1b\x7f\n\t ") == "a␇b␛␡↵→·"
    maps = torch.rand(1, 2, 3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        heatmaps.save(heatmaps.layer_figure(maps[0], ["a", "b"], ["x\x07", "😀", "\u0800"]), tmp_path / "layer.png")
        list(heatmaps.layer_pixels(maps, [["a", "b"]], ["x\x07", "😀", "\u0800"]))


def test_two_saves_into_one_folder_at_once_move_their_reports_in_one_after_the_other(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch
) -> None:
    """Each moves its files in under the folder's lock: without it, their files could interleave into a mix."""
    import threading

    import minigpt

    lm = minigpt.load(tiny_checkpoint)
    reports = [lm.attention("ab"), lm.attention(PROMPT)]
    expected = [{path.name: path.read_bytes() for path in att.save(tmp_path / f"alone{i}")} for i, att in enumerate(reports)]
    together, write_all, move_in, moving = threading.Barrier(2, timeout=60), report._write_all, report._move_in, []

    def write_all_together(*args):
        written = write_all(*args)
        together.wait()  # both reports are written: now they race to move in
        return written

    def slow_move_in(*args):
        moving.append("in")
        time.sleep(0.3)
        move_in(*args)
        moving.append("out")

    monkeypatch.setattr(report, "_write_all", write_all_together)
    monkeypatch.setattr(report, "_move_in", slow_move_in)
    threads = [threading.Thread(target=att.save, args=(tmp_path / "both",)) for att in reports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert moving == ["in", "out", "in", "out"]
    assert {path.name: path.read_bytes() for path in (tmp_path / "both").iterdir()} in expected
