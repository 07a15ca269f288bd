"""The Lightning side of training: loss, optimizer, schedule, metrics and checkpoint contents.

The GPT itself stays plain PyTorch (`minigpt.model`); this module only wraps it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.io import TorchCheckpointIO

from minigpt import checkpoint
from minigpt.model import GPT, GPTConfig

log = logging.getLogger(__name__)


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay."""

    lr: float = 1e-3
    """Peak learning rate, reached after the warmup."""
    min_lr_ratio: float = 0.1
    """The cosine decays to lr * min_lr_ratio at the last step."""
    warmup_steps: int = 100
    """Steps of linear warmup from 0 to lr."""
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to matrices and embeddings only."""
    beta1: float = 0.9
    beta2: float = 0.99


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at `step`: linear warmup, then cosine down to `min_ratio`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class LitGPT(L.LightningModule):
    """Trains a `GPT` with next-token cross-entropy; logs loss, bits per byte, perplexity, lr and tokens/s.

    `payload` (tokenizer, training config, data fingerprint) is written into every checkpoint so that a
    checkpoint alone is enough to sample from or inspect the model.
    """

    def __init__(
        self,
        model_config: dict[str, Any],
        optim_config: dict[str, Any],
        val_bytes_per_token: float = 1.0,
        payload: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["payload"])  # plain dicts and floats: loads with weights_only=True
        self.model = GPT(GPTConfig(**model_config))
        self.optim = OptimConfig(**optim_config)
        self.val_bytes_per_token = val_bytes_per_token
        self.payload = payload or {}
        self._last_batch_time: float | None = None
        self._resume_rng: torch.Tensor | None = None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        x, y = batch[:, :-1], batch[:, 1:]  # (B, T) inputs and next-token targets
        logits = self.model(x)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        now = time.perf_counter()
        if self._last_batch_time is not None:
            tokens = batch.size(0) * (batch.size(1) - 1) * self.trainer.world_size
            self.log("tokens_per_s", tokens / (now - self._last_batch_time), prog_bar=True)
        self._last_batch_time = now
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch), prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        loss = self.trainer.callback_metrics.get("val/loss")
        if loss is None:
            return
        # Comparable across tokenizers: nats/token -> bits per byte of the original text.
        bpb = loss / self.val_bytes_per_token / math.log(2)
        self.log("val/bpb", bpb)
        self.log("val/ppl", torch.exp(loss))
        if not self.trainer.sanity_checking and self.trainer.is_global_zero:
            log.info(
                "step %d: val loss %.4f nats/token = %.4f nats/byte = %.4f bits/byte",
                self.global_step, loss, loss / self.val_bytes_per_token, bpb,
            )  # fmt: skip

    def on_validation_start(self) -> None:
        self._last_batch_time = None  # validation time is not training throughput

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": o.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        fused = all(p.is_cuda for p in params)
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), fused=fused or None)
        total = int(self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, o.warmup_steps, total, o.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, ckpt: dict[str, Any]) -> None:
        ckpt[checkpoint.PAYLOAD_KEY] = self.payload
        # Restoring the global RNG makes dropout after a resume match an uninterrupted run.
        ckpt["rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, ckpt: dict[str, Any]) -> None:
        # The payload stays the one built for this run (its config overrides, its data); only compare.
        saved = ckpt.get(checkpoint.PAYLOAD_KEY, {}).get("data", {}).get("fingerprint")
        if saved is not None and saved != self.payload.get("data", {}).get("fingerprint"):
            log.warning("the corpus changed since this run's checkpoint; training continues on the new shards")
        self._resume_rng = ckpt.get("rng_state")

    def on_train_batch_start(self, batch: torch.Tensor, batch_idx: int) -> None:
        # Restored here, not on load: creating DataLoader iterators in between draws from the global RNG.
        if self._resume_rng is not None:
            torch.set_rng_state(self._resume_rng)
            self._resume_rng = None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it, so a crash never truncates a checkpoint."""

    def save_checkpoint(self, ckpt: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        checkpoint.atomic_save(ckpt, path)


class LastCheckpoint(L.Callback):
    """Save `path` when training ends, or on Ctrl-C (or SIGTERM turned into one), so no step is lost.

    Validation-time checkpoints miss the steps after the last validation; this catches them. It saves
    only steps not yet on disk: an early interrupt must not replace a good checkpoint with a less trained
    one, and the end of a run that just validated needs no second write.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._saved_step: int | None = None  # the latest step already in a checkpoint

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_step = trainer.global_step  # a fresh start has nothing to lose; a resume is on disk

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, ckpt: dict[str, Any]) -> None:
        self._saved_step = trainer.global_step

    def _save_if_progressed(self, trainer: L.Trainer) -> None:
        if self._saved_step is not None and trainer.global_step > self._saved_step:
            trainer.save_checkpoint(self.path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_if_progressed(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self._save_if_progressed(trainer)
