"""What a run leaves for people: progress lines without a terminal, metrics.csv, loss.png, the model card and
TensorBoard's hparams."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from minigpt.cli import run
from minigpt.cli.train import main
from minigpt.training.callbacks.record import RunRecord, flatten
from tests.helpers import REPO
from tests.helpers import train_in_process as train


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_writes_metrics_csv_loss_png_and_a_model_card(tmp_path):
    assert train(tmp_path, "run", "--samples", "1", "--sample_tokens", "8") == 0
    run_dir = tmp_path / "run"
    table = rows(run_dir)
    assert [int(r["step"]) for r in table if r["train_loss"]] == [1, 2, 3, 4, 5, 6]
    validations = [r for r in table if r["val_loss"]]
    assert [int(r["step"]) for r in validations] == [3, 6] and all(float(r["val_train_loss"]) > 0 for r in validations)
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (run_dir / "README.md").read_text()
    best = min(float(r["val_loss"]) for r in validations)
    assert f"{best:.4f} nats/token" in card and "minigpt eval --ckpt" in card and "Sample 1:" in card


def test_a_run_shorter_than_the_validation_interval_validates_its_last_step(tmp_path):
    # A short first try (--trainer.max_steps below the validation interval) ended with no best.ckpt, and its card
    # said "nan nats/token, nan bits/byte (best checkpoint)".
    assert train(tmp_path, "run", "--trainer.max_steps", "2", "--samples", "0") == 0
    validations = [r for r in rows(tmp_path / "run") if r["val_loss"]]
    assert [int(r["step"]) for r in validations] == [2] and (tmp_path / "run" / "best.ckpt").is_file()
    assert f"| validation loss | {float(validations[0]['val_loss']):.4f} nats/token" in (tmp_path / "run" / "README.md").read_text()


def test_validation_comes_every_n_steps_with_gradient_accumulation_too(tmp_path):
    # Lightning counts val_check_interval in batches: with 3 batches a step, "every 2 steps" validated at step 0
    # and twice at steps 2 and 4.
    args = ["--trainer.max_steps", "5", "--trainer.val_check_interval", "2", "--trainer.accumulate_grad_batches", "3"]
    assert train(tmp_path, "run", *args, "--samples", "0") == 0
    assert [int(r["step"]) for r in rows(tmp_path / "run") if r["val_loss"]] == [2, 4, 5]


def test_a_run_that_never_validates_says_so_on_its_card(tmp_path):
    no_rows = ["--trainer.log_every_n_steps", "25"]  # 2 steps: no loss logged, none validated
    assert train(tmp_path, "run", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--samples", "0", *no_rows) == 0
    card = (tmp_path / "run" / "README.md").read_text()
    assert "| validation loss | not measured: this run did not validate" in card and "nan" not in card
    assert not (tmp_path / "run" / "loss.png").exists() and "loss.png" not in card


def test_the_cards_commands_paste_into_a_shell_whatever_the_folder_is_named(tmp_path):
    import shlex

    assert train(tmp_path, "it's a run", "--samples", "0") == 0
    card = (tmp_path / "it's a run" / "README.md").read_text()
    commands = [line for line in card.splitlines() if line.startswith("minigpt ")]
    assert len(commands) == 4
    for line in commands:
        words = shlex.split(line)
        assert words[words.index("--ckpt" if "--ckpt" in words else "--resume") + 1] == str(tmp_path / "it's a run")


def test_a_resumed_run_keeps_the_metrics_of_the_steps_before(tmp_path):
    assert train(tmp_path, "run") == 0
    assert run(main, ["--resume", str(tmp_path / "run"), "--trainer.max_steps", "9"]) == 0
    steps = [int(r["step"]) for r in rows(tmp_path / "run") if r["train_loss"]]
    assert steps == list(range(1, 10))


def test_tensorboard_holds_the_whole_config_with_final_metrics_and_no_meaningless_scalars(tmp_path):
    assert train(tmp_path, "run") == 0
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    scalars = events.Tags()["scalars"]
    assert "epoch" not in scalars and "hp_metric" not in scalars
    assert {"val/loss", "val/train_loss", "hp/best_val_loss"} <= set(scalars)
    assert [e.step for e in events.Scalars("val/loss")] == [3, 6] and [e.step for e in events.Scalars("train/loss")][0] == 1
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert {"data", "tokenizer", "batch_size", "seed", "model.n_layer", "optim.lr", "trainer.max_steps"} <= set(hparams)


def test_tensorboard_gets_each_logged_steps_own_loss_lr_and_gradient_norm(tmp_path):
    # Per-step metrics are logged only on the steps that reach the loggers: those must still carry their own step's
    # values, not a stale one. TensorBoard numbers the steps as metrics.csv and the log lines do, from 1.
    assert train(tmp_path, "run", "--trainer.log_every_n_steps", "2") == 0
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"scalars": 0}).Reload()
    table = {int(r["step"]): r for r in rows(tmp_path / "run") if r["train_loss"]}
    logged = {e.step: e.value for e in events.Scalars("train/loss")}
    assert sorted(logged) == [2, 4, 6] == sorted(table)
    for step, loss in logged.items():
        assert loss == pytest.approx(float(table[step]["train_loss"]), rel=1e-6)
    assert [e.step for e in events.Scalars("lr")] == [2, 4, 6]
    norms = [e.value for e in events.Scalars("train/grad_norm")]
    assert [e.step for e in events.Scalars("train/grad_norm")] == [2, 4, 6] and len(set(norms)) == 3


def test_flatten_names_nested_settings_with_dots():
    assert flatten({"model": {"n_layer": 2, "bias": True}, "data": "x", "trainer": {"devices": None}}) == {
        "model.n_layer": 2, "model.bias": True, "data": "x", "trainer.devices": "None",
    }  # fmt: skip


@pytest.mark.e2e
def test_without_a_terminal_training_prints_plain_lines_and_no_adverts(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text("".join(f"line {i}: a b c d e f g\n" for i in range(300)))
    command = [sys.executable, str(REPO / "train.py"), "--data", str(corpus), "--cache_dir", str(tmp_path / "cache"),
               "--out_dir", str(tmp_path / "run"), "--model.block_size", "16", "--model.n_layer", "1",
               "--model.n_head", "2", "--model.n_embd", "16", "--batch_size", "2", "--val_windows", "2",
               "--trainer.max_steps", "6", "--trainer.val_check_interval", "3", "--trainer.log_every_n_steps", "2",
               "--trainer.accelerator", "cpu", "--samples", "0"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)  # stdout and stderr are pipes
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert "\r" not in text and "Tip" not in text and "INFO:" not in text
    lines = [line for line in text.splitlines() if line.startswith("step ") and "|" in line]
    assert [line.split()[1] for line in lines] == ["2/6", "4/6", "6/6"]
    assert all(f" {field} " in lines[-1] for field in ("loss", "lr", "tokens/s", "ms/step", "elapsed", "ETA"))


def test_a_run_killed_before_drawing_loss_png_gets_it_on_resume(tmp_path):
    """kill -9 can land between metrics.csv and loss.png at the very end; a resume with nothing to train draws it."""
    assert train(tmp_path, "run") == 0
    (tmp_path / "run" / "loss.png").unlink()
    assert run(main, ["--resume", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "loss.png").is_file() and len(rows(tmp_path / "run")) == 8


def test_a_run_killed_after_its_last_save_keeps_its_metrics_and_a_resume_draws_them(tmp_path, monkeypatch):
    """kill -9 can land after the final last.ckpt and before metrics.csv is written at the end (the fault
    suite found it): the rows saved at each validation survive, and a resume with nothing to train draws them."""
    with monkeypatch.context() as patched:
        patched.setattr(RunRecord, "on_fit_end", lambda self, trainer, pl_module: None)  # killed right there
        assert train(tmp_path, "run") == 0
    assert not (tmp_path / "run" / "loss.png").exists()
    assert [r["step"] for r in rows(tmp_path / "run") if r["val_loss"]] == ["3", "6"]
    assert run(main, ["--resume", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "loss.png").is_file() and len(rows(tmp_path / "run")) == 8
