"""The Lightning side of training: loss, optimizer, schedule, metrics and checkpoint contents.

The GPT itself stays plain PyTorch (`minigpt.model`); this module only wraps it.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_only

from minigpt import checkpoint
from minigpt.errors import MiniGPTError
from minigpt.model import GPT, GPTConfig
from minigpt.payload import Payload, data_of
from minigpt.training.config import OptimConfig
from minigpt.training.datamodule import batch_seed, rank_seed
from minigpt.training.optim import MuonAdamW, adamw_groups, hidden_matrices

log = logging.getLogger(__name__)


class Diverged(MiniGPTError):
    """Training produced a non-finite loss, gradient or weight; nothing non-finite was saved."""


def lr_factor(
    step: int, warmup_steps: int, total_steps: int, min_ratio: float, schedule: str = "cosine", decay_fraction: float = 0.2
) -> float:  # fmt: skip
    """Multiplier of the peak learning rate at `step`: linear warmup, then down to `min_ratio` at `total_steps`,
    along a cosine, or (`wsd`) held at 1 until the last `decay_fraction` of the steps and then linearly."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "wsd":
        decay_steps = round(decay_fraction * total_steps)
        progress = min(1.0, max(0, step - (total_steps - decay_steps)) / decay_steps) if decay_steps else 0.0
        return 1 - (1 - min_ratio) * progress
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_within(warmup_steps: int, total_steps: int) -> int:
    """`warmup_steps`, clamped to the `total_steps` of training with a warning (in global rank 0) when longer: a
    warmup longer than the run would never reach the peak learning rate."""
    if warmup_steps <= total_steps:
        return warmup_steps
    if rank_zero_only.rank == 0:
        log.warning(
            "--optim.warmup_steps %d is longer than the %d steps of training: warming up over all %d instead, so the "
            "peak lr is reached only at the last step; set --optim.warmup_steps lower to train longer at it",
            warmup_steps, total_steps, total_steps,
        )  # fmt: skip
    return total_steps


def whole_model_here(trainer: L.Trainer) -> bool:
    """True when this process holds all of the model's weights and gradients (one device, or DDP's replicas);
    under FSDP and other sharding strategies each process holds a shard, and every forward is a collective."""
    return isinstance(trainer.strategy, SingleDeviceStrategy) or type(trainer.strategy) is DDPStrategy


def next_token_loss(model: GPT, batch: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats/token) of `model` predicting each next token of the (B, T+1) `batch`."""
    x, y = batch[:, :-1], batch[:, 1:]  # (B, T) inputs and next-token targets
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


class LitGPT(L.LightningModule):
    """Trains a `GPT` with next-token cross-entropy; logs loss, bits per byte, perplexity and lr.

    `payload` (a `minigpt.payload.Payload`) is written into every checkpoint so that a checkpoint alone is
    enough to sample from or inspect the model.
    """

    def __init__(
        self,
        model_config: dict[str, Any],
        optim_config: dict[str, Any],
        val_bytes_per_token: float = 1.0,
        payload: Payload | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["payload"])  # plain dicts and floats: loads with weights_only=True
        # The attribute `minigpt.payload.MODEL_ATTR` names: checkpoints hold this GPT's weights as "model.<name>".
        self.model = GPT(GPTConfig(**model_config))
        self.optim = OptimConfig(**optim_config)
        self.val_bytes_per_token = val_bytes_per_token
        self.payload = payload
        self._saved_payload = payload.to_dict() if payload is not None else {}  # plain data, made once for every save
        self.seed = seed
        self._last_loss: torch.Tensor | None = None
        self.compile_loss = False
        """torch.compile the loss (forward and backward) when training starts; set before `Trainer.fit`."""
        self._loss_fn = next_token_loss
        self._grad_norm: torch.Tensor | None = None  # of the step being taken, for the guard and clipping
        self._first_bad: torch.Tensor | None = None  # see `_guard_on_device`
        self._micro = (-1, 0)  # (global step, micro-batch index within it) of the batch being trained

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def setup(self, stage: str) -> None:
        # Compiled here, in the process that trains (a spawned worker too: a compiled function does not pickle).
        # The function is compiled, not the model, so the weights keep their names in checkpoints.
        if self.compile_loss:
            self._loss_fn = torch.compile(next_token_loss)

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        return self._loss_fn(self.model, batch)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self._last_loss = loss.detach()
        if self._logged_step():
            self.log("train/loss", loss, prog_bar=True)
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
            # The step this batch completes, as the terminal, metrics.csv and validation name it (Lightning would
            # log at the one before: 24, 49, ... beside val/loss at 25, 50, ...).
            self.log("step", float(self.global_step + 1))
        return loss

    def _logged_step(self) -> bool:
        """True on the steps whose logged values reach the loggers (every `log_every_n_steps`). Lightning keeps
        only the last value of a per-step metric, and each `self.log` costs ~0.3 ms: a twentieth of a small
        model's step, spent three times per step on values nobody sees."""
        connector = getattr(self.trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def validation_step(self, batch: torch.Tensor, batch_idx: int, dataloader_idx: int = 0) -> None:
        # The data module's second validation loader holds windows of the training text (see val_dataloader).
        name = "val/loss" if dataloader_idx == 0 else "val/train_loss"
        self.log(name, self._loss(batch), prog_bar=dataloader_idx == 0, sync_dist=True, add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        loss = self.trainer.callback_metrics.get("val/loss")
        if loss is None:
            return
        # Comparable across tokenizers: nats/token -> bits per byte of the original text.
        bpb = loss / self.val_bytes_per_token / math.log(2)
        # val/loss is already the mean over all processes, so these agree everywhere; sync_dist says so to
        # Lightning. "step" puts validation at the step the terminal names (Lightning would use the one before).
        self.log("val/bpb", bpb, sync_dist=True)
        self.log("val/ppl", torch.exp(loss), sync_dist=True)
        self.log("step", float(self.global_step), sync_dist=True)
        if not self.trainer.sanity_checking and self.trainer.is_global_zero:
            train_loss = self.trainer.callback_metrics.get("val/train_loss", float("nan"))
            log.info(
                "step %d: val loss %.4f nats/token = %.4f nats/byte = %.4f bits/byte (training text: %.4f)",
                self.global_step, loss, loss / self.val_bytes_per_token, bpb, train_loss,
            )  # fmt: skip

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optim
        params = [p for p in self.model.parameters() if p.requires_grad]  # in this order in every saved state
        # The fused kernel updates all parameters in one pass (on CPU ~6x faster than the per-tensor loop, which
        # is a tenth of a small model's step); it unscales float16 gradients itself, which clipping must not see.
        fused = all(p.device.type in ("cpu", "cuda") for p in params) and not self._grad_scaler()
        adamw = {"lr": o.lr, "betas": (o.beta1, o.beta2), "fused": fused or None}
        if o.name == "muon":
            if not whole_model_here(self.trainer):  # Muon orthogonalizes whole matrices, never a process's shard
                strategy = type(self.trainer.strategy).__name__
                raise MiniGPTError(f"--optim.name muon needs whole weight matrices in every process, not {strategy}'s shards")
            hidden, other = hidden_matrices(self.model)
            muon = {"lr": o.muon_lr, "weight_decay": o.weight_decay}
            optimizer: torch.optim.Optimizer = MuonAdamW(adamw_groups(other, o.weight_decay), hidden, adamw, muon)
        else:
            optimizer = torch.optim.AdamW(adamw_groups(params, o.weight_decay), **adamw)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = warmup_within(o.warmup_steps, total)
        factor = functools.partial(
            lr_factor, warmup_steps=warmup, total_steps=total, min_ratio=o.min_lr_ratio, schedule=o.schedule,
            decay_fraction=o.decay_fraction,
        )  # fmt: skip
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_batch_start(self, batch: torch.Tensor, batch_idx: int) -> None:
        # Dropout masks are a pure function of (seed, rank, step, micro-batch), like the data windows, so a
        # resumed run draws the same masks as an uninterrupted one, wherever the first run stopped. Without
        # dropout a step draws nothing random, and reseeding would only cost time (~5% of a small model's step).
        if self.model.config.dropout == 0:
            return
        step, micro = self._micro
        self._micro = (self.global_step, micro + 1 if step == self.global_step else 0)
        index = self.global_step * self.trainer.accumulate_grad_batches + self._micro[1]
        torch.manual_seed(batch_seed(rank_seed(self.seed, self.global_rank), index) + 1)

    def _grad_scaler(self) -> bool:
        """True under float16 mixed precision, whose GradScaler scales the gradients."""
        plugin = getattr(getattr(self, "_trainer", None), "precision_plugin", None)
        return getattr(plugin, "scaler", None) is not None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The divergence guard: stop before a non-finite loss or gradient reaches the weights."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        bad_loss = (~torch.isfinite(self._last_loss)).float()
        if not whole_model_here(self.trainer):
            # Each process holds a shard of the gradients (and saw its own loss): the total over all of them,
            # so that every process decides alike, and clipping scales each shard by the same factor.
            squares, bad_loss = self.trainer.strategy.reduce(torch.stack([norm**2, bad_loss]), reduce_op="sum")
            norm = squares.sqrt()
        self._grad_norm = norm
        if self._logged_step():
            self.log("train/grad_norm", norm)
        if self._guard_on_device(optimizer):
            # Reading the verdict here would make the CPU wait for each step's backward pass, and leave the GPU
            # idle while the next step is queued. The fused kernel skips a step whose `found_inf` is set, on the
            # GPU; the first such step is reported at the next log step or validation (`report_divergence`).
            bad = torch.maximum(bad_loss, (~torch.isfinite(norm)).float())
            optimizer.found_inf = bad
            step = self._step_record(bad_loss, norm)
            first = self._first_bad if self._first_bad is not None else torch.zeros_like(step)
            self._first_bad = torch.where((first[0] > 0) | (bad == 0), first, step)
            return
        # A float16 GradScaler skips steps with inf gradients on purpose; there only the loss tells.
        if bad_loss or not (self._grad_scaler() or torch.isfinite(norm)):
            self._diverged(self._step_record(bad_loss, norm))

    def _step_record(self, bad_loss: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        """[step, loss is bad in some process, gradient norm, this process's loss], what `_diverged` words."""
        number = torch.tensor(self.global_step + 1.0, device=norm.device)
        return torch.stack([number, bad_loss, norm, self._last_loss])

    def _guard_on_device(self, optimizer: torch.optim.Optimizer) -> bool:
        """True where the divergence guard decides on the device: CUDA, fused AdamW, no GradScaler."""
        return self.device.type == "cuda" and bool(optimizer.defaults.get("fused")) and not self._grad_scaler()

    def report_divergence(self) -> None:
        """Raise Diverged for the first step the device-side guard skipped, if there was one."""
        if self._first_bad is not None and self._first_bad[0] > 0:
            self._diverged(self._first_bad)

    def on_train_batch_end(self, outputs: Any, batch: torch.Tensor, batch_idx: int) -> None:
        if self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self.report_divergence()

    def on_validation_start(self) -> None:
        self.report_divergence()  # before the validation's checkpoint is saved

    def on_train_end(self) -> None:
        self.report_divergence()

    def _diverged(self, step: torch.Tensor) -> None:
        """Raise Diverged for `step` = [step, loss is bad in some process, gradient norm, this process's loss]."""
        number, bad_loss, norm, loss = step.tolist()
        if not bad_loss:
            what = f"gradient norm is {norm}"
        elif math.isfinite(loss):
            what = "loss is not finite in another process"
        else:
            what = f"loss is {loss}"
        raise Diverged(f"training diverged at step {int(number)}: the {what}")

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:  # fmt: skip
        """Clip as Lightning would, reusing the guard's gradient norm. Without a GradScaler the gradients
        are the true ones, so this also works for fused AdamW, which Lightning refuses to clip under bf16."""
        if not gradient_clip_val:
            return
        if self._grad_scaler():
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        elif gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.model.parameters(), gradient_clip_val)
        elif self._grad_norm.device.type != "cpu" or gradient_clip_val / (self._grad_norm + 1e-6) < 1:
            torch.nn.utils.clip_grads_with_norm_(self.model.parameters(), gradient_clip_val, self._grad_norm)
        # Otherwise torch would multiply every gradient by exactly 1.0 (its coefficient, clamped): on a CPU, where
        # reading the norm waits for nothing, that pass is skipped (most steps of a run: 818 of shakespeare_cpu's 875).

    def on_save_checkpoint(self, ckpt: dict[str, Any]) -> None:
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise Diverged(f"training diverged by step {self.global_step}: the weights are no longer finite")
        ckpt[checkpoint.PAYLOAD_KEY] = self._saved_payload

    def on_load_checkpoint(self, ckpt: dict[str, Any]) -> None:
        # Before Lightning restores the optimizer: one optimizer's state does not fit the other.
        saved_name = ckpt.get("hyper_parameters", {}).get("optim_config", {}).get("name", "adamw")
        if saved_name != self.optim.name:
            raise MiniGPTError(
                f"--optim.name {self.optim.name} cannot continue a run trained with {saved_name}: resume it with "
                f"--optim.name {saved_name}, or start a new run from its weights with --init"
            )
        # The payload stays the one built for this run (its config overrides, its data); only compare.
        # The resumed checkpoint was read and checked before training started (`minigpt.checkpoint.read`).
        saved, ours = data_of(ckpt[checkpoint.PAYLOAD_KEY]), self.payload.data if self.payload is not None else None
        if saved is not None and ours is not None and saved.fingerprint != ours.fingerprint:
            log.warning("the corpus changed since this run's checkpoint; training continues on the new shards")
