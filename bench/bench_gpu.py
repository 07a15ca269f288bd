"""The GPU path, measured: time to a good character model, and the MFU of a GPT-2 (124M) shape.

(a) The real `minigpt train --config shakespeare_char` command (nanoGPT's GPU recipe; defaults: compiled,
    bf16, fused AdamW, TF32, pinned non-blocking copies), from process start until the validation loss is
    at most --target (1.47, nanoGPT's result on an A100 in about 3 minutes). Everything counts.
(b) `LitGPT` under `Trainer.fit` with GPT-2 small's shape (12 layers x 12 heads x 768, context 1024, vocab
    50304) on random tokens: tokens/s over the steps after compilation, and model FLOPs utilisation against
    the device's dense bf16 peak (minigpt.training.flops).

Without a CUDA GPU both run a tiny shape for a few steps, so that the script cannot rot; their figures then
mean nothing. Usage: python bench/bench_gpu.py [--data tinyshakespeare.txt] [--target 1.47] [--steps 50] [-- TRAIN OPTIONS]
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from bench_lightning_overhead import SameBatch, StepTimer
from torch.utils.data import DataLoader

from minigpt.model import GPTConfig
from minigpt.training.flops import flops_per_token, peak_flops
from minigpt.training.module import LitGPT

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
GPU = torch.cuda.is_available()
GPT2 = dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.0, bias=True)
TINY = dict(vocab_size=512, block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.0, bias=True)
TINY_CHAR = ["--model.block_size", "32", "--model.n_layer", "1", "--model.n_head", "2", "--model.n_embd", "32",
             "--batch_size", "4", "--val_windows", "8", "--trainer.max_steps", "20", "--trainer.val_check_interval", "10"]  # fmt: skip


def time_to_quality(data: Path, target: float, extra: list[str]) -> None:
    """(a): run the train command and report its wall time, the last validation and the speed it logged; the
    lines echoed on the way carry the seconds since the command started (a timeline of where time goes)."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "minigpt", "train", "--config", "shakespeare_char", "--data", str(data.resolve()),
                   "--target_loss", str(target), "--cache_dir", f"{tmp}/cache", "--out_dir", f"{tmp}/run",
                   "--samples", "0", "--trainer.enable_progress_bar", "false", *extra]  # fmt: skip
        start = time.perf_counter()
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp) as child:
            lines = []
            for line in child.stdout:  # echoed as they come, so a run cut short still shows how far it got
                lines.append(line)
                progress = re.match(r"step (\d+)/", line)
                if "val loss" in line or "parameters" in line or (progress and int(progress[1]) % 250 == 0):
                    print(f"  {time.perf_counter() - start:6.1f} s  {line.rstrip()}", flush=True)
        seconds = time.perf_counter() - start
    output = "".join(lines)
    if child.returncode != 0:
        raise SystemExit(f"train failed (exit {child.returncode}):\n{output[-3000:]}")
    vals = re.findall(r"step (\d+): val loss ([0-9.]+)", output)
    speed = re.findall(r"\| ([0-9,]+) tokens/s(?: \| MFU ([0-9.]+)%)?", output)
    step, loss = vals[-1] if vals else ("?", "?")
    last = f"{speed[-1][0]} tokens/s" + (f", MFU {speed[-1][1]}%" if speed and speed[-1][1] else "") if speed else ""
    print(f"(a) shakespeare_char to val <= {target}: {seconds:.1f} s from process start; "
          f"val {loss} at step {step}; {last}", flush=True)  # fmt: skip


class SyncedTimer(StepTimer):
    """StepTimer that waits for the GPU at both ends, so queued work is counted."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and GPU:
            torch.cuda.synchronize()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_end(self, trainer, pl_module) -> None:
        if GPU:
            torch.cuda.synchronize()
        super().on_train_end(trainer, pl_module)


def gpt2_throughput(batch_size: int, steps: int, warmup: int) -> None:
    """(b): train the GPT-2 shape on one repeated random batch and report tokens/s and MFU."""
    shape = GPT2 if GPU else TINY
    config = GPTConfig(**shape)
    module = LitGPT(shape, {"lr": 6e-4, "warmup_steps": 10})
    module.compile_loss = GPU
    batch = torch.randint(0, config.vocab_size, (batch_size, config.block_size + 1))
    timer = SyncedTimer(warmup)
    trainer = L.Trainer(
        accelerator="gpu" if GPU else "cpu", devices=1, precision="bf16-mixed" if GPU else "32-true",
        max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0, callbacks=[timer],
    )  # fmt: skip
    loader = DataLoader(SameBatch(batch), batch_size=None, pin_memory=GPU)
    trainer.fit(module, train_dataloaders=loader)
    tokens_per_s = (steps - warmup) * batch_size * config.block_size / timer.seconds
    peak = peak_flops(torch.device("cuda" if GPU else "cpu"), str(trainer.precision))  # fit ends with it on the CPU
    mfu = f"MFU {tokens_per_s * flops_per_token(config, config.block_size) / peak:.1%}" if peak else "MFU n/a"
    name = torch.cuda.get_device_name() if GPU else "CPU (tiny shape)"
    print(f"(b) {config.num_parameters() / 1e6:.0f}M parameters, batch {batch_size} x {config.block_size}, "
          f"{trainer.precision}, compiled {GPU}, on {name}: {tokens_per_s:,.0f} tokens/s, "
          f"{timer.seconds / (steps - warmup) * 1000:.1f} ms/step, {mfu}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="tiny-shakespeare text")
    parser.add_argument("--target", type=float, default=1.47, help="(a) validation loss to reach, nats per byte")
    parser.add_argument("--batch_size", type=int, default=16 if GPU else 4, help="(b) sequences per step")
    parser.add_argument("--steps", type=int, default=50 if GPU else 6, help="(b) steps, the warm-up ones included")
    parser.add_argument("--warmup", type=int, default=20 if GPU else 2, help="(b) steps not timed (compilation)")
    parser.add_argument("--only", choices=("a", "b"), help="run one part")
    parser.add_argument("train_options", nargs="*", help="(a) more train options, after --, e.g. -- --compile false")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    if args.only != "b":
        tiny = [] if GPU else ["--trainer.accelerator", "cpu", *TINY_CHAR]
        time_to_quality(args.data, args.target if GPU else 100.0, tiny + args.train_options)
    if args.only != "a":
        gpt2_throughput(args.batch_size, args.steps, args.warmup)


if __name__ == "__main__":
    main()
