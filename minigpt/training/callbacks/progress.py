"""Training speed every N steps (tokens/s, and MFU where the device's peak is known) for TensorBoard, and
the same as a plain line a person can read without a terminal instead of a bar.

Lightning's progress bar redraws one line with carriage returns; in a log file, a CI page or a cluster
job's output that is kilobytes of noise and nothing readable between validations. Speed is measured over
the whole interval, so a step is never timed (nor the GPU waited for) on its own.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import lightning as L

from minigpt.training.flops import flops_per_token, peak_flops

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    """`0:01:23` style, whole seconds."""
    return str(timedelta(seconds=round(max(seconds, 0.0))))


class ProgressLines(L.Callback):
    """Every `every` optimizer steps, global rank 0 logs `perf/tokens_per_s` and `perf/mfu` to the loggers and,
    with `lines`, one line: step, loss, learning rate, tokens/s, MFU, ms/step, elapsed time and the estimated
    time left (from the speed since this process started). Time spent validating is not counted as training time."""

    def __init__(self, every: int, lines: bool = True) -> None:
        self.every = max(1, every)
        self.lines = lines
        self._start: tuple[float, int] | None = None  # (time, step) when training started in this process
        self._last: tuple[float, int] | None = None  # (time, step) of the last line
        self._peak: float | None = None  # the device's FLOP/s at this precision, where known
        self._validating_since: float | None = None
        self._validation = 0.0  # seconds of validation since the last line

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = (time.perf_counter(), trainer.global_step)
        self._peak = peak_flops(pl_module.device, str(trainer.precision))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validating_since = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validating_since is not None and self._last is not None:  # not the sanity check before training
            self._validation += time.perf_counter() - self._validating_since

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or self._last is None or step % self.every or step == self._last[1]:
            return
        now = time.perf_counter()
        (start, first), (last, last_step) = self._start, self._last
        per_step = (now - last - self._validation) / (step - last_step)
        tokens = batch.size(0) * (batch.size(1) - 1) * trainer.world_size * trainer.accumulate_grad_batches
        left = (trainer.max_steps - step) * (now - start) / (step - first) if trainer.max_steps > 0 else 0.0
        speed = {"perf/tokens_per_s": tokens / per_step}
        if self._peak:
            speed["perf/mfu"] = speed["perf/tokens_per_s"] * flops_per_token(pl_module.model.config, batch.size(1) - 1) / self._peak
        for logger in trainer.loggers:
            logger.log_metrics(speed, step=step)
        self._last, self._validation = (now, step), 0.0
        if not self.lines:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        mfu = f" | MFU {speed['perf/mfu']:.1%}" if "perf/mfu" in speed else ""
        log.info(
            "step %d/%d | loss %.4f | lr %.2e | %s tokens/s%s | %.1f ms/step | elapsed %s | ETA %s",
            step, trainer.max_steps, float(loss), lr, f"{tokens / per_step:,.0f}", mfu, per_step * 1000,
            duration(now - start), duration(left),
        )  # fmt: skip
