"""The CPU levers, measured: what each does to the training step of the shipped shakespeare_cpu model.

Variants, each against fp32 with fused AdamW on all cores (the train command's CPU default):
- bf16 autocast (`--trainer.precision bf16-mixed`), and bf16 inside fp32 matrix products (oneDNN's fpmath
  mode, what `torch.set_float32_matmul_precision("medium")` asks for on a CPU);
- AdamW's per-tensor (foreach) implementation instead of the fused kernel;
- one thread instead of one per core (`--threads`).
One process, the variants alternating for several rounds from the same weights and the same batches of the
corpus; median ms/step, the ratio to the default, and the training loss at the end (bf16 must leave it close).
Usage: python bench/bench_cpu_arithmetic.py [--steps 100] [--rounds 3] [--config shakespeare_cpu] [--data FILE]
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from minigpt.model import GPT, GPTConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "minigpt" / "configs"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux), to say whether it multiplies bf16 in hardware (avx512_bf16, amx_bf16)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        return set()


def variants(cores: int) -> dict[str, dict]:
    """name -> settings: autocast context, matmul precision, fused AdamW, threads."""
    base = {"autocast": nullcontext, "matmul": "highest", "fused": True, "threads": cores}
    bf16 = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)
    return {
        "fp32, fused AdamW (default)": base,
        "bf16 autocast": {**base, "autocast": bf16},
        "bf16 in fp32 matmuls": {**base, "matmul": "medium"},
        "foreach AdamW": {**base, "fused": False},
        "1 thread": {**base, "threads": 1},
    }


def trainer(model: GPT, settings: dict, batches: list[torch.Tensor]) -> Callable[[], float]:
    """A function that trains `model` on `batches` with `settings` and returns the last loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=settings["fused"], foreach=None if settings["fused"] else True)
    autocast: Callable[[], AbstractContextManager] = settings["autocast"]

    def run() -> float:
        torch.set_num_threads(settings["threads"])
        torch.set_float32_matmul_precision(settings["matmul"])
        for x in batches:
            with autocast():
                logits = model(x[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        return loss.item()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config", default="shakespeare_cpu")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a text file; its bytes are the tokens")
    args = parser.parse_args()
    config = yaml.safe_load((CONFIGS / f"{args.config}.yaml").read_text())
    shape = GPTConfig(**{**config["model"], "vocab_size": 257})
    batch, cores = config["batch_size"], torch.get_num_threads()
    flags = cpu_flags()
    print(f"{args.config}: {shape.n_layer} layers x {shape.n_embd}, batch {batch} x {shape.block_size}; {cores} threads; "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, avx512_bf16: {'avx512_bf16' in flags}, "
          f"amx_bf16: {'amx_bf16' in flags}")  # fmt: skip
    torch.manual_seed(0)
    start = GPT(shape)
    text = torch.frombuffer(bytearray(args.data.read_bytes()), dtype=torch.uint8).long()
    starts = torch.randint(len(text) - shape.block_size - 1, (args.steps, batch))
    batches = [torch.stack([text[i : i + shape.block_size + 1] for i in rows]) for rows in starts]
    runs = {name: trainer(copy.deepcopy(start), settings, batches) for name, settings in variants(cores).items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    losses: dict[str, float] = {}
    for name, run in runs.items():  # warm-up: first calls allocate and pick kernels
        run()
    for _ in range(args.rounds):
        for name, run in runs.items():
            begin = time.perf_counter()
            losses[name] = run()
            times[name].append((time.perf_counter() - begin) / args.steps * 1000)
    default = statistics.median(times["fp32, fused AdamW (default)"])
    for name, ms in times.items():
        step = statistics.median(ms)
        print(f"{name:>28}: {step:6.2f} ms/step, {step / default:4.2f}x the default; loss after "
              f"{(args.rounds + 1) * args.steps} steps {losses[name]:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
