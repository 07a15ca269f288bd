"""What this machine can train: the device requests it can meet, whether a model and batch fit in its memory,
and the precision and arithmetic a run uses on it. Each check runs before anything is prepared or written."""

from __future__ import annotations

import os

import torch

from minigpt.errors import MiniGPTError
from minigpt.model import GPTConfig

MAX_WORKERS = 4 * (os.cpu_count() or 1)  # data workers, or CPU training processes: thousands would exhaust the machine
MAX_THREADS = MAX_WORKERS  # --threads: more threads than cores only wait for each other; thousands exhaust the machine


def check_devices(accelerator: object, strategy: object, devices: object) -> None:
    """Refuse, before anything is prepared or written, device requests this machine cannot meet, saying what
    would work; Lightning checks the rest of the --trainer options when the Trainer is built."""
    accelerator, strategy = str(accelerator), str(strategy)
    gpus = torch.cuda.device_count()
    on_cpu = accelerator == "cpu" or (accelerator in ("auto", "None") and not gpus)
    if strategy.startswith("fsdp") and on_cpu:
        where = "--trainer.accelerator cpu was chosen" if accelerator == "cpu" else "this machine has no CUDA GPU"
        raise MiniGPTError(
            f"--trainer.strategy {strategy} shards the model across CUDA GPUs, and {where}: on CPUs use "
            "--trainer.strategy ddp"
        )
    if accelerator in ("gpu", "cuda") and not gpus:
        raise MiniGPTError(f"--trainer.accelerator {accelerator} needs a CUDA GPU and this machine has none: use --trainer.accelerator cpu")
    try:
        asked = int(devices)
    except (TypeError, ValueError):
        return  # "auto", a list or "0,1": Lightning resolves and checks them
    if on_cpu and asked > MAX_WORKERS:  # CPU processes may share cores, but each holds a whole model and batch
        raise MiniGPTError(
            f"--trainer.devices {asked} would start {asked} training processes on {os.cpu_count()} CPU cores: "
            f"use at most {MAX_WORKERS}"
        )
    if uses_cuda(accelerator) and asked > gpus:
        raise MiniGPTError(f"--trainer.devices {asked} asks for more GPUs than the {gpus} this machine has: use at most {gpus}")


def uses_cuda(accelerator: object) -> bool:
    """True when `--trainer.accelerator` (auto, gpu, cuda or unset) puts training on a CUDA GPU this machine has."""
    return str(accelerator) in ("auto", "gpu", "cuda", "None") and torch.cuda.is_available()


def check_fits_in_memory(model: GPTConfig, batch_size: int, accelerator: object) -> None:
    """Refuse a model and batch that clearly cannot train in this machine's memory, before allocating any of it.

    The estimate: 16 bytes per parameter (fp32 weights, gradients and AdamW's two moments) plus fp32
    activations of about 16 * n_embd * n_layer + 2 * vocab_size numbers per token of the batch.
    """
    params = model.num_parameters()
    tokens = batch_size * model.block_size
    need = 16 * params + 4 * tokens * (16 * model.n_embd * model.n_layer + 2 * model.vocab_size)
    if uses_cuda(accelerator):
        have, where = torch.cuda.get_device_properties(0).total_memory, "GPU"
    else:
        have, where = _available_memory(), "machine"
    if need > have:
        raise MiniGPTError(
            f"{params / 1e6:,.1f}M parameters and {tokens:,} tokens per batch need about {need / 2**30:,.0f} GiB to "
            f"train, more than the {have / 2**30:,.0f} GiB free on this {where}: use a smaller --model.n_embd, "
            "--model.n_layer, --model.block_size or --batch_size"
        )


def _available_memory() -> int:
    """Bytes of memory free for a new job (Linux's MemAvailable), else the machine's total."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def pick_precision(requested: str | None, accelerator: str | None) -> str:
    """bf16 mixed precision on GPUs that support it, full fp32 elsewhere, unless the user chose."""
    if requested is not None:
        return str(requested)
    return "bf16-mixed" if uses_cuda(accelerator) and torch.cuda.is_bf16_supported() else "32-true"


def set_arithmetic(threads: int | None, accelerator: object) -> None:
    """--threads, and TF32 for float32 matrix products on CUDA GPUs (10 mantissa bits, as bf16 autocast has 7;
    float32 weights and sums stay float32)."""
    if threads is not None:
        torch.set_num_threads(threads)
    if uses_cuda(accelerator):
        torch.set_float32_matmul_precision("high")
