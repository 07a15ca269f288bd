"""A run stopped by SIGTERM and resumed writes TensorBoard and metrics.csv on the uninterrupted run's step axis:
the same steps, each with the same value, and metrics.csv and TensorBoard name a step's loss and lr alike."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from minigpt.cli import run
from minigpt.cli.train import main
from minigpt.training.callbacks.checkpoints import LastCheckpoint
from tests.helpers import train_in_process

STEPS, STOP_AFTER = 12, 5  # stopped between two validations (every 4 steps), so last.ckpt is the signal's own save
RUN = ["--trainer.max_steps", str(STEPS), "--trainer.val_check_interval", "4", "--seed", "3"]


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    """Every (step, value) of `tag` in the run's event files, in the order the runs wrote them."""
    points = []
    for events in sorted((folder / "tb").rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            points += [(event.step, event.value) for event in accumulator.Scalars(tag)]
    return points


def csv_column(folder: Path, column: str) -> list[tuple[int, float]]:
    with (folder / "metrics.csv").open(newline="") as f:
        return [(int(row["step"]), float(row[column])) for row in csv.DictReader(f) if row[column]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted run, and the same run stopped by SIGTERM after step STOP_AFTER and resumed."""
    tmp = tmp_path_factory.mktemp("tb")
    assert train_in_process(tmp, "reference", *RUN) == 0
    check_for_signal = LastCheckpoint.on_train_batch_start

    def sigterm_after_stop_step(self, trainer, *args):
        if trainer.global_step == STOP_AFTER:
            os.kill(os.getpid(), signal.SIGTERM)
        check_for_signal(self, trainer, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LastCheckpoint, "on_train_batch_start", sigterm_after_stop_step)
        assert train_in_process(tmp, "resumed", *RUN) == 128 + signal.SIGTERM
    assert run(main, ["--resume", str(tmp / "resumed")]) == 0
    return tmp / "reference", tmp / "resumed"


@pytest.mark.parametrize("tag", ["train/loss", "lr", "val/loss", "val/bpb"])
def test_a_resumed_run_logs_each_step_once_with_the_uninterrupted_runs_value(runs, tag):
    reference, resumed = (scalars(folder, tag) for folder in runs)
    assert [step for step, _ in resumed] == [step for step, _ in reference]
    assert [value for _, value in resumed] == pytest.approx([value for _, value in reference], rel=1e-5)


def test_training_scalars_are_logged_at_the_steps_they_complete(runs):
    assert [step for step, _ in scalars(runs[1], "train/loss")] == list(range(1, STEPS + 1))


@pytest.mark.parametrize(("column", "tag"), [("train_loss", "train/loss"), ("lr", "lr"), ("val_loss", "val/loss")])
def test_metrics_csv_and_tensorboard_give_each_step_the_same_value(runs, column, tag):
    for folder in runs:
        rows, points = csv_column(folder, column), scalars(folder, tag)
        assert [step for step, _ in rows] == [step for step, _ in points]
        assert [value for _, value in rows] == pytest.approx([value for _, value in points], rel=1e-5)


def test_with_accumulated_micro_batches_metrics_csv_gives_tensorboards_loss_and_lr_per_step(tmp_path):
    """Lightning hands callbacks the loss divided by the micro-batches per step, and a batch that only accumulates
    completes no step: neither reaches metrics.csv."""
    assert train_in_process(tmp_path, "run", *RUN, "--trainer.accumulate_grad_batches", "2") == 0
    for column, tag in (("train_loss", "train/loss"), ("lr", "lr")):
        rows, points = csv_column(tmp_path / "run", column), scalars(tmp_path / "run", tag)
        assert [step for step, _ in rows] == [step for step, _ in points] == list(range(1, STEPS + 1))
        assert [value for _, value in rows] == pytest.approx([value for _, value in points], rel=1e-5)
