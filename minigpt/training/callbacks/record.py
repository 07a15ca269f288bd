"""What a run leaves for people beside its checkpoints: `metrics.csv`, `loss.png`, TensorBoard logs with the
whole config in the hparams tab next to the final metrics.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from minigpt.errors import MiniGPTError
from minigpt.training.callbacks.checkpoints import StopAtStep

log = logging.getLogger(__name__)

COLUMNS = ("step", "train_loss", "lr", "val_loss", "val_bpb", "val_train_loss")
"""metrics.csv: one row per logged training step (train_loss, lr) or per validation (val_*); other cells empty."""


class TensorBoard(TensorBoardLogger):
    """Lightning's TensorBoard logger without its "epoch" scalar, which means nothing in one endless epoch."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"model": {"n_layer": 4}}` -> `{"model.n_layer": 4}`, with anything but numbers and text as text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def step_lr(trainer: L.Trainer) -> float:
    """The learning rate of the step being taken, as TensorBoard's ``lr`` has it: read before the step, since the
    schedule moves on as soon as the step is taken."""
    return trainer.optimizers[0].param_groups[0]["lr"]


def batch_loss(trainer: L.Trainer, outputs: Any) -> float:
    """The loss of the batch just trained, as TensorBoard's ``train/loss`` has it: Lightning hands callbacks the
    loss divided by the number of micro-batches that a step accumulates."""
    loss = outputs["loss"] if isinstance(outputs, dict) else outputs
    return float(loss) * trainer.accumulate_grad_batches


class RunRecord(L.Callback):
    """In global rank 0: record the training loss every `every` steps and each validation's metrics, saving
    `metrics.csv` in `folder` at each validation; when training ends or a signal stops it, write `metrics.csv`
    and `loss.png` (keeping the rows of the steps before a resume) and log `config` with the final metrics to
    TensorBoard's hparams tab."""

    def __init__(self, folder: Path, config: Mapping[str, Any], every: int) -> None:
        self.folder, self.config, self.every = Path(folder), config, max(1, every)
        self.rows: list[dict[str, Any]] = []
        self._before: tuple[int, float] = (-1, math.nan)  # (global step, lr) as the current batch started

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._before = (trainer.global_step, step_lr(trainer))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Rows go by the step a batch completes, as TensorBoard's do: a micro-batch that only accumulates has none.
        step, (step_before, lr) = trainer.global_step, self._before
        if trainer.is_global_zero and step > step_before and step % self.every == 0:
            self.rows.append({"step": step, "train_loss": batch_loss(trainer, outputs), "lr": lr})

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or not trainer.is_global_zero or "val/loss" not in metrics:
            return
        row = {"step": trainer.global_step, "val_loss": float(metrics["val/loss"]), "val_bpb": float(metrics["val/bpb"])}
        if "val/train_loss" in metrics:
            row["val_train_loss"] = float(metrics["val/train_loss"])
        self.rows.append(row)
        # Saved as each validation's checkpoint is, so a run killed (kill -9) after its last save keeps them.
        write_metrics(self.folder / "metrics.csv", self._all_rows())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)  # also when a resume finds no step left to train (on_train_end is skipped then)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, StopAtStep):
            self._write(trainer)

    def _all_rows(self) -> list[dict[str, Any]]:
        """This process's rows after those of the runs it resumes (from metrics.csv, steps before its first)."""
        before = self.rows[0]["step"] if self.rows else math.inf
        return earlier_rows(self.folder / "metrics.csv", before) + self.rows

    def _write(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        # A resume with no step left to train still (re)draws what a run killed at its very end did not.
        rows = self._all_rows()
        if not rows:
            return
        write_metrics(self.folder / "metrics.csv", rows)
        plot_losses(rows, self.folder / "loss.png")
        vals = [r for r in rows if "val_loss" in r]
        if vals:
            best = min(vals, key=lambda r: r["val_loss"])
            metrics = {"hp/best_val_loss": best["val_loss"], "hp/best_val_bpb": best["val_bpb"], "hp/final_val_loss": vals[-1]["val_loss"]}
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.log_hyperparams(flatten(self.config), metrics)


def earlier_rows(path: Path, before: float) -> list[dict[str, Any]]:
    """The rows of an existing metrics.csv for steps before `before` (a resumed run's history); one that is not a
    run's metrics is a `MiniGPTError`."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="") as f:
            return [{k: float(v) if k != "step" else int(v) for k, v in row.items() if v} for row in csv.DictReader(f) if int(row["step"]) < before]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as err:
        raise MiniGPTError(
            f"{str(path)!r} is not a run's metrics ({type(err).__name__}): move it away (the run writes a new one with "
            "the steps from here on), then resume again"
        ) from None


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    replace_text(path, text.getvalue())


def replace_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed over it: `path` holds its old text or the new, and
    a failed write (a full disk) leaves no temporary file behind."""
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        tmp.write_text(text, newline="")
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # named by the file, not by its temporary twin
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def plot_losses(rows: list[dict[str, Any]], path: Path) -> None:
    """Training and validation loss (nats/token) against step; bits per byte on the right-hand axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(column: str) -> tuple[list[int], list[float]]:
        points = [(r["step"], r[column]) for r in rows if column in r and math.isfinite(r[column])]
        return [s for s, _ in points], [v for _, v in points]

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(*series("train_loss"), lw=1, alpha=0.6, label="training batches")
    ax.plot(*series("val_train_loss"), "s--", ms=3, lw=1, label="training text, fixed windows")
    ax.plot(*series("val_loss"), "o-", ms=4, lw=1.5, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    steps, bpb = series("val_bpb")
    _, val = series("val_loss")
    if bpb and val[-1]:
        right = ax.twinx()  # bits per byte is loss x a constant of the validation text: the same curve, rescaled
        scale = bpb[-1] / val[-1]
        right.set_ylim(*(y * scale for y in ax.get_ylim()))
        right.set_ylabel("validation bits per byte")
    fig.tight_layout()
    tmp = path.with_suffix(".png.tmp")
    try:
        fig.savefig(tmp, format="png")  # then renamed: a run killed while drawing leaves no half-written picture
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
