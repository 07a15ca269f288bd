"""Which device a name means, and the arithmetic inference gets there (no Lightning here; training sets its own
precision)."""

from __future__ import annotations

import contextlib

import torch

from minigpt.errors import MiniGPTError


def resolve(name: object, what: str = "device") -> torch.device:
    """The torch device `name` means: auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps, or such a
    `torch.device`. One this machine does not have, or any other value, is a `MiniGPTError` naming `what`."""
    spelled = str(name) if isinstance(name, torch.device) else name
    if not isinstance(spelled, str):
        raise MiniGPTError(f"{what} must be auto, cpu, cuda, cuda:N or mps, got {type(name).__name__}")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if spelled == "auto":
        spelled = "cuda" if cuda else "mps" if mps else "cpu"
    kind, colon, index = spelled.partition(":")
    whole = index.isascii() and index.isdigit() and (index == "0" or not index.startswith("0"))
    if kind not in ("cpu", "cuda", "mps") or (colon and not (whole and (kind == "cuda" or index == "0"))):
        raise MiniGPTError(f"{what} must be auto, cpu, cuda, cuda:N or mps, got {spelled[:40]!r}")
    if (kind == "cuda" and not cuda) or (kind == "mps" and not mps):
        raise MiniGPTError(f"{what} {spelled} was asked for but is not available here; use cpu or auto")
    if index and int(index) >= torch.cuda.device_count():
        raise MiniGPTError(f"{what} {spelled} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(spelled)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on CUDA GPUs that support it (faster, half the memory); full precision elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
