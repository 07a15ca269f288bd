"""Training progress a person can read without a terminal: a plain line every N steps instead of a bar.

Lightning's progress bar redraws one line with carriage returns; in a log file, a CI page or a cluster
job's output that is kilobytes of noise and nothing readable between validations.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    """`0:01:23` style, whole seconds."""
    return str(timedelta(seconds=round(max(seconds, 0.0))))


class ProgressLines(L.Callback):
    """Every `every` optimizer steps, global rank 0 logs one line: step, loss, learning rate, tokens/s,
    ms/step, elapsed time and the estimated time left (from the speed since this process started)."""

    def __init__(self, every: int) -> None:
        self.every = max(1, every)
        self._start: tuple[float, int] | None = None  # (time, step) when training started in this process
        self._last: tuple[float, int] | None = None  # (time, step) of the last line

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = (time.perf_counter(), trainer.global_step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or self._last is None or step % self.every or step == self._last[1]:
            return
        now = time.perf_counter()
        (start, first), (last, last_step) = self._start, self._last
        per_step = (now - last) / (step - last_step)
        tokens = batch.size(0) * (batch.size(1) - 1) * trainer.world_size * trainer.accumulate_grad_batches
        left = (trainer.max_steps - step) * (now - start) / (step - first) if trainer.max_steps > 0 else 0.0
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        log.info(
            "step %d/%d | loss %.4f | lr %.2e | %s tokens/s | %.1f ms/step | elapsed %s | ETA %s",
            step, trainer.max_steps, float(loss), lr, f"{tokens / per_step:,.0f}", per_step * 1000,
            duration(now - start), duration(left),
        )  # fmt: skip
        self._last = (now, step)
