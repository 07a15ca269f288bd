"""Lightning callbacks that decide when a run saves and stops: `last.ckpt` at every stop (end, signal), `best.ckpt`
at each validation (the last step always validates), checkpoint files written atomically and read safely, and a
stop at a target loss.

`minigpt.training.module` holds what goes into a checkpoint; this module holds when and how it is written.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from minigpt import checkpoint, signals

log = logging.getLogger(__name__)


class StopAtStep(Exception):
    """Raised by `LastCheckpoint` at a step boundary after Ctrl-C or SIGTERM, its state saved on the way out;
    `minigpt.training.run` tells the user (`minigpt.errors.Interrupted`). Not a KeyboardInterrupt: Lightning turns
    one raised inside fit into exit(1)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reads and writes through `minigpt.checkpoint`: atomic, checksummed writes, and
    reads that unpickle tensors and plain data only (Lightning's own leaves ``weights_only`` unset).

    `preloaded` is a (path, checkpoint) already read and validated by the caller, so resuming reads it once;
    other reads are Lightning's own files (ddp_spawn hands the trained weights back through one).
    """

    def __init__(self, preloaded: tuple[str, dict[str, Any]] | None = None) -> None:
        self.preloaded = preloaded
        self.written: dict[str, int] = {}
        """The step each file (by absolute path) holds, for the writes that completed."""

    def save_checkpoint(self, ckpt: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        checkpoint.atomic_save(ckpt, path)
        self.written[os.path.abspath(path)] = ckpt.get("global_step")

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if self.preloaded is not None and str(path) == self.preloaded[0]:
            ckpt, self.preloaded = self.preloaded[1], None
            return ckpt
        return checkpoint.read_plain(path)


class LastCheckpoint(L.Callback):
    """Keep `path` current: save it when training ends and when a signal stops it, so no step is lost.

    Ctrl-C and SIGTERM (see `minigpt.signals`) stop training between steps, at the start of the next batch,
    and every process of a distributed run stops at the same one. The state saved then is exactly that of
    an uninterrupted run at that step. An interrupt forced inside a step (a second Ctrl-C) and a divergence
    save nothing: the last good checkpoint stays.

    Validation-time checkpoints miss the steps after the last validation; this catches them. It saves
    only steps not yet on disk, so a run that just validated needs no second write.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.saved_step: int | None = None
        """The latest step already in a checkpoint, or being written to one (every process alike)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.path = trainer.strategy.broadcast(self.path)  # rank 0's, as Lightning does for its own checkpoints

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.saved_step = trainer.global_step  # a fresh start has nothing to lose; a resume is on disk
        # Lightning's SIGTERM handler talks to the other processes from inside the handler, wherever each one
        # is; `minigpt.signals` only records the signal, and the processes agree at the next batch instead.
        signals.reclaim()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        signum = signals.received() or 0
        if trainer.world_size > 1:  # all processes stop at the same step, whichever of them got the signal
            signum = int(trainer.strategy.reduce(torch.tensor(signum, device=pl_module.device), reduce_op="max"))
        if signum:
            raise StopAtStep(signum)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, ckpt: dict[str, Any]) -> None:
        self.saved_step = trainer.global_step

    def _save_if_progressed(self, trainer: L.Trainer) -> None:
        if self.saved_step is not None and trainer.global_step > self.saved_step:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_if_progressed(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, StopAtStep):
            self._save_if_progressed(trainer)


class TargetLoss(L.Callback):
    """Stop training at the first validation whose loss is at most `target` (nats/token): train until good enough.
    The loss is the mean over all processes, so they all stop at the same step; last.ckpt is saved there."""

    def __init__(self, target: float) -> None:
        self.target = target

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or loss is None or float(loss) > self.target:
            return
        trainer.should_stop = True
        if trainer.is_global_zero:
            log.info("step %d: val loss %.4f reached --target_loss %g: stopping", trainer.global_step, float(loss), self.target)


class ValidateLastStep(L.Callback):
    """Validate after the last step too when it is not a validation step of its own, so that every run that
    finishes has its final model's validation loss and a `best.ckpt`: a first try shorter than
    `val_check_interval` had neither. Lightning validates a step after which training is asked to stop."""

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class BestCheckpoint(ModelCheckpoint):
    """`best.ckpt` (lowest validation loss) and `last.ckpt` at each validation, each always under its own
    name: never a ``-v1`` copy beside an existing file. A resumed run folder that was moved or copied keeps
    its best score, with the recorded paths moved into the folder being resumed."""

    def __init__(self, dirpath: str) -> None:
        super().__init__(
            dirpath=dirpath, filename="best", monitor="val/loss", save_last=True,
            auto_insert_metric_name=False, enable_version_counter=False,
            # Training is one endless epoch, so validation is the only save point (Lightning would wait for
            # an epoch end that never comes when val_check_interval is 1).
            save_on_train_epoch_end=False,
        )  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:

            def moved(path: Any) -> Any:
                return os.path.join(self.dirpath, os.path.basename(path)) if path else path

            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,
                **{key: moved(state_dict.get(key)) for key in ("best_model_path", "kth_best_model_path", "last_model_path")},
                "best_k_models": {moved(k): v for k, v in (state_dict.get("best_k_models") or {}).items()},
            }
        super().load_state_dict(state_dict)
