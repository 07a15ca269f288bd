"""Lightning's cost per training step: `LitGPT` under `Trainer.fit` against a plain PyTorch loop.

Both train the same model (shakespeare_cpu shape by default) on the same batch with the same optimizer,
schedule and gradient clipping, in one process, alternating several rounds; the ratio of median step
times is the overhead. Usage: python bench/bench_lightning_overhead.py [--steps 200] [--rounds 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from minigpt.training.config import OptimConfig
from minigpt.training.module import LitGPT, lr_factor

MODEL = dict(vocab_size=257, block_size=64, n_layer=2, n_head=4, n_embd=128, dropout=0.0)
OPTIM = OptimConfig(lr=1e-3, warmup_steps=10)


class SameBatch(IterableDataset):
    def __init__(self, batch: torch.Tensor) -> None:
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


class StepTimer(L.Callback):
    """Wall time from the end of warm-up step `warmup` to the end of training."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.seconds = warmup, 0.0, 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.start


def lightning_step_seconds(batch: torch.Tensor, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    module = LitGPT(MODEL, vars(OPTIM))
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        max_steps=steps, accelerator="gpu" if batch.is_cuda else "cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, gradient_clip_val=1.0, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[timer],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=DataLoader(SameBatch(batch.cpu()), batch_size=None))
    return timer.seconds / (steps - warmup)


def plain_step_seconds(batch: torch.Tensor, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    model = LitGPT(MODEL, vars(OPTIM)).model.to(batch.device)  # the same GPT, same init
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": OPTIM.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=OPTIM.lr, betas=(OPTIM.beta1, OPTIM.beta2), fused=True,  # as LitGPT chooses on CPUs and CUDA GPUs
    )  # fmt: skip
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, OPTIM.warmup_steps, steps, OPTIM.min_lr_ratio)
    )
    model.train()
    start = 0.0
    for step in range(steps):
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        loss.item()  # Lightning reads the loss every step for its logs; do the same sync here
        if step + 1 == warmup:
            start = time.perf_counter()
    return (time.perf_counter() - start) / (steps - warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    batch = torch.randint(0, MODEL["vocab_size"], (args.batch_size, MODEL["block_size"] + 1), device=args.device)
    lit, plain = [], []
    for _ in range(args.rounds):  # alternate so machine noise hits both alike
        lit.append(lightning_step_seconds(batch, args.steps, args.warmup))
        plain.append(plain_step_seconds(batch, args.steps, args.warmup))
    lit_ms, plain_ms = statistics.median(lit) * 1e3, statistics.median(plain) * 1e3
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"model {MODEL}, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, {where}, fp32")
    print(f"plain PyTorch loop : {plain_ms:7.2f} ms/step")
    print(f"Lightning LitGPT   : {lit_ms:7.2f} ms/step")
    print(f"ratio Lightning / plain: {lit_ms / plain_ms:.3f}")


if __name__ == "__main__":
    main()
