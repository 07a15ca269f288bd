"""Training speed every N steps (tokens/s, and MFU where the device's peak is known) for TensorBoard, and
the same as a plain line a person can read without a terminal instead of a bar; on a terminal, the bar.

Lightning's progress bar redraws one line with carriage returns; in a log file, a CI page or a cluster
job's output that is kilobytes of noise and nothing readable between validations. Speed is measured over
the whole interval, so a step is never timed (nor the GPU waited for) on its own.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from tqdm import tqdm

from minigpt.training.callbacks.record import batch_loss, step_lr
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
        self._lr = 0.0  # of the step being taken

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = (time.perf_counter(), trainer.global_step)
        self._peak = peak_flops(pl_module.device, str(trainer.precision))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._lr = step_lr(trainer)

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
        mfu = f" | MFU {speed['perf/mfu']:.1%}" if "perf/mfu" in speed else ""
        log.info(
            "step %d/%d | loss %.4f | lr %.2e | %s tokens/s%s | %.1f ms/step | elapsed %s | ETA %s",
            step, trainer.max_steps, batch_loss(trainer, outputs), self._lr, f"{tokens / per_step:,.0f}", mfu, per_step * 1000,
            duration(now - start), duration(left),
        )  # fmt: skip


class StepBar(ProgressBar):
    """The progress bar on a terminal: one line that counts optimizer steps (`step 30/60 |███  | 00:12<00:12,
    loss 3.125, val 3.200`), no epoch counter and no validation bar. While it is shown, the console handlers of the
    root and `minigpt` loggers print through tqdm (`tqdm.write`), above the bar, so a log line (each
    validation's, a warning) is never glued to the bar, cut or lost; the finished bar stays as one line."""

    BAR_FORMAT = "step {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining}{postfix}"

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self.bar: tqdm | None = None
        self._routed: list[tuple[logging.Logger, list[logging.Handler]]] = []

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        tqdm.write(" ".join(map(str, args)), file=sys.stderr)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled:
            return
        total = trainer.max_steps if trainer.max_steps > 0 else None
        self.bar = tqdm(
            total=total, initial=trainer.global_step, bar_format=self.BAR_FORMAT if total else None,
            unit="step", dynamic_ncols=True, file=sys.stderr, leave=True,
        )  # fmt: skip
        self._routed = _print_logs_through(self.bar)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.bar is None or trainer.global_step <= self.bar.n:
            return
        self._show_metrics(trainer, refresh=False)
        self.bar.update(trainer.global_step - self.bar.n)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None and not trainer.sanity_checking:
            self._show_metrics(trainer, refresh=True)

    def _show_metrics(self, trainer: L.Trainer, refresh: bool) -> None:
        metrics = trainer.progress_bar_metrics  # floats, updated on the logged steps only (no device sync here)
        shown = [f"{name} {metrics[key]:.3f}" for name, key in (("loss", "train/loss"), ("val", "val/loss")) if key in metrics]
        self.bar.set_postfix_str(", ".join(shown), refresh=refresh)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._close()

    def _close(self) -> None:
        for logger, handlers in self._routed:
            logger.handlers = handlers
        self._routed = []
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _ThroughBar(logging.Handler):
    """Formats as `handler` does and prints through tqdm to its stream, above the bar."""

    def __init__(self, handler: logging.StreamHandler) -> None:
        super().__init__(handler.level)
        self.handler = handler
        self.filters = list(handler.filters)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.handler.format(record), file=self.handler.stream)
        except Exception:  # noqa: BLE001 - logging must never be what stops training
            self.handleError(record)


def _print_logs_through(bar: tqdm) -> list[tuple[logging.Logger, list[logging.Handler]]]:
    """Swap the console handlers (stdout, stderr) of the root and `minigpt` loggers for ones that print through
    tqdm; returns each changed logger with its handlers before, to restore them."""
    routed = []
    for logger in (logging.getLogger(), logging.getLogger("minigpt")):
        handlers = logger.handlers
        console = [h for h in handlers if type(h) is logging.StreamHandler and h.stream in (sys.stdout, sys.stderr)]
        if console:
            logger.handlers = [_ThroughBar(h) if h in console else h for h in handlers]
            routed.append((logger, handlers))
    return routed
