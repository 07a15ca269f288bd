"""Lightning callbacks that look inside the model while it trains: sample text and attention maps."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import lightning as L
import numpy as np
import tiktoken
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from minigpt import tokenizer as tok
from minigpt.errors import MiniGPTError
from minigpt.sample import SamplingSettings, generate
from minigpt.training.module import whole_model_here

log = logging.getLogger(__name__)


class ProcessSetup(L.Callback):
    """Calls `configure(label)` in every process as training is set up, `label` naming the process as
    `minigpt.training.launch.process_label` does. Worker processes that ddp_spawn starts run no command of their own,
    so this is where they get its logging and warning settings."""

    def __init__(self, configure: Callable[[str | None], None]) -> None:
        self.configure = configure

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.configure(None if trainer.is_global_zero else f"rank {trainer.global_rank}")


def _tensorboard_writers(trainer: L.Trainer, model: torch.nn.Module) -> list:
    """The SummaryWriters of the trainer's TensorBoard loggers; none during the sanity check, none when the
    model is sharded across processes (see `RankZeroView`), and none (with a warning)
    when the model is not finite: a diverged model cannot be sampled, and a logger must never be what
    crashes a run."""
    if trainer.sanity_checking or not whole_model_here(trainer):
        return []
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        log.warning("step %d: the model has non-finite weights; skipping samples and attention maps", trainer.global_step)
        return []
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


VIEW_EVERY_S = 30.0
"""Views (samples, attention) cost a second or two each; a short run validates every few seconds."""


class RankZeroView(L.Callback):
    """A callback that runs the whole model in global rank 0 alone to show what it learns: at validations at
    least `every_s` seconds after training started or the last view, and at the end of training if the last
    validation was skipped, so the final model is always shown (a run shorter than `every_s` shows only that
    one). Under a strategy that shards the model, where that would hang the run, it says once that it is off."""

    shows = "views of the model"

    def __init__(self, every_s: float = VIEW_EVERY_S) -> None:
        self.every_s = every_s
        self._shown_at: float | None = None  # time.monotonic() after the last view
        self._owed = False  # a validation's view was skipped and none has been shown since

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and not whole_model_here(trainer):
            log.warning(
                "%s are not logged under %s, which shards the model; sample and inspect the checkpoint instead",
                self.shows, type(trainer.strategy).__name__,
            )  # fmt: skip

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._shown_at = time.monotonic()  # the untrained model is noise: the first view waits too

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._owed = self._shown_at is not None and time.monotonic() - self._shown_at < self.every_s
        if not self._owed:
            self._show(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._owed:
            self._owed = False
            self._show(trainer, pl_module)

    def _show(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.show(trainer, pl_module)
        self._shown_at = time.monotonic()

    def show(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the view of the model as it is now."""
        raise NotImplementedError


class AttentionLogger(RankZeroView):
    """At validations (see `RankZeroView`), log the attention of `probe_text` to TensorBoard: the overview
    grid of `layers` (default: all) as an image, each of those layers' heads with the probe's tokens as labels
    (``attention/layer_{l}``), and every head's statistics as scalars
    ``attention/{kind}/L{l}H{h}`` (kinds: previous_token, first_token, induction, entropy; see
    `minigpt.inspection.maps.head_stats`), so that one can watch heads form over training.

    Needs a `TensorBoardLogger` among the trainer's loggers and does nothing without one; rank zero only.
    """

    shows = "attention maps"

    def __init__(
        self, tokenizer: tiktoken.Encoding, probe_text: str, layers: list[int] | None = None, every_s: float = VIEW_EVERY_S
    ) -> None:
        super().__init__(every_s)
        self.ids = tok.encode(tokenizer, probe_text)
        if not self.ids:
            raise ValueError("AttentionLogger needs a non-empty probe_text")
        self.tokenizer = tokenizer
        self.layers = layers
        self._canvas = None  # the labelled layer figure, laid out at the first view (heatmaps.LayerCanvas)

    def __getstate__(self) -> dict:
        # A drawn figure cannot be pickled (ddp_spawn pickles callbacks, and a notebook may copy them): it is
        # laid out again where it is needed.
        return {**self.__dict__, "_canvas": None}

    @rank_zero_only
    def show(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writers = _tensorboard_writers(trainer, pl_module.model)
        if not writers:
            return
        from minigpt.inspection import heatmaps, report  # matplotlib: only once there is something to draw

        try:
            analysis = report.analyse(pl_module.model, self.tokenizer, self.ids, layers=self.layers)
        except MiniGPTError as err:  # finite but enormous weights can still overflow the attention scores
            log.warning("step %d: no attention maps logged: %s", trainer.global_step, err)
            return
        panels = analysis.png
        images = {"attention/overview": heatmaps.figure_pixels(heatmaps.overview_figure(panels))}
        titles = [heatmaps.column_title(c) for c in panels.cols]
        if self._canvas is None or not self._canvas.fits(panels.maps[0], analysis.tokens):
            self._canvas = heatmaps.LayerCanvas(panels.maps[0], titles, analysis.tokens)  # kept for the next views
        for r, layer in enumerate(panels.rows):  # each layer's heads, with the probe's tokens on both axes
            images[f"attention/layer_{layer}"] = self._canvas.pixels(panels.maps[r], titles)[..., :3]
        step = trainer.global_step
        for writer in writers:
            for tag, image in images.items():
                writer.add_image(tag, image, step, dataformats="HWC")
            for kind, scores in analysis.stats.kinds().items():  # (L, H) each
                for (layer, head), score in np.ndenumerate(scores.numpy()):
                    if not np.isnan(score):  # previous- and first-token scores of a one-token probe
                        writer.add_scalar(f"attention/{kind}/L{layer}H{head}", float(score), step)


class SampleLogger(RankZeroView):
    """At validations (see `RankZeroView`), log a few completions of the empty prompt as text to TensorBoard,
    to watch the model learn to write; drawn with `settings` (default: two of 128 tokens, seed 0, so that each
    validation's samples start from the same random numbers)."""

    shows = "samples"

    def __init__(
        self,
        tokenizer: tiktoken.Encoding,
        settings: SamplingSettings = SamplingSettings(max_new_tokens=128, num_samples=2, seed=0),
        every_s: float = VIEW_EVERY_S,
    ) -> None:
        super().__init__(every_s)
        self.tokenizer, self.settings = tokenizer, settings

    @rank_zero_only
    def show(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writers = _tensorboard_writers(trainer, pl_module.model)
        if not writers:
            return
        model = pl_module.model
        was_training = model.training
        model.eval()
        try:
            texts = generate(model, self.tokenizer, "", self.settings)
        except MiniGPTError as err:  # finite but enormous weights can still overflow the logits
            log.warning("step %d: no samples logged: %s", trainer.global_step, err)
            return
        finally:
            model.train(was_training)
        for writer in writers:
            for i, text in enumerate(texts):
                writer.add_text(f"samples/{i}", f"```\n{text}\n```", trainer.global_step)
