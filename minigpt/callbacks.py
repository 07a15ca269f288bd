"""Lightning callbacks that look inside the model while it trains."""

from __future__ import annotations

import lightning as L
import tiktoken
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from minigpt import attention
from minigpt import tokenizer as tok


class AttentionLogger(L.Callback):
    """At each validation end, log the attention of `probe_text` to TensorBoard: the overview grid of
    `layers` (default: all) as an image, and every head's mean entropy as ``attention/entropy/L{l}H{h}``.

    Needs a `TensorBoardLogger` among the trainer's loggers and does nothing without one; rank zero only.
    """

    def __init__(self, tokenizer: tiktoken.Encoding, probe_text: str, layers: list[int] | None = None) -> None:
        self.ids = tok.encode(tokenizer, probe_text)
        if not self.ids:
            raise ValueError("AttentionLogger needs a non-empty probe_text")
        self.tokenizer = tokenizer
        self.layers = layers

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writers = [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if trainer.sanity_checking or not writers:
            return
        from minigpt import report  # matplotlib: only once there is something to draw

        maps = attention.extract(pl_module.model, self.ids)  # eval mode inside, training mode restored
        n_layer, n_head = maps.weights.shape[:2]
        layers = list(range(n_layer)) if self.layers is None else self.layers
        panels = report.Panels(maps.weights[layers], layers, [str(h) for h in range(n_head)])
        image = report.figure_pixels(report.overview_figure(panels))
        entropies = attention.entropy(maps.weights)  # (L, H)
        step = trainer.global_step
        for writer in writers:
            writer.add_image("attention/overview", image, step, dataformats="HWC")
            for layer in range(n_layer):
                for head in range(n_head):
                    writer.add_scalar(f"attention/entropy/L{layer}H{head}", float(entropies[layer, head]), step)
