"""Self-contained checkpoints: weights plus everything needed to use them (no Lightning import here).

A checkpoint is a Lightning checkpoint dict with one extra key, ``"minigpt"``, holding plain data:
model config, tokenizer (ranks, pattern, specials), training config and the data fingerprint.
Everything loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken
import torch

from minigpt import tokenizer as tok
from minigpt.errors import MiniGPTError
from minigpt.model import GPT, GPTConfig

PAYLOAD_KEY = "minigpt"
MODEL_PREFIX = "model."  # the LightningModule keeps the GPT as `self.model`


@dataclass
class Loaded:
    """A model ready for inference, its tokenizer, and the checkpoint's plain-data payload."""

    model: GPT
    tokenizer: tiktoken.Encoding
    payload: dict[str, Any]


def make_payload(
    config: GPTConfig, enc: tiktoken.Encoding, train_config: dict[str, Any], data: dict[str, Any]
) -> dict[str, Any]:
    """The plain-data record stored beside the weights in every checkpoint."""
    return {
        "model_config": config.to_dict(),
        "tokenizer": tok.to_dict(enc),
        "train_config": train_config,
        "data": data,
    }


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """`torch.save` to a temporary file beside `path`, then rename: `path` is never left truncated."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would make checkpoints private; open() applies the user's umask.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw checkpoint dict, loaded safely onto the CPU; user-facing errors for bad paths and files."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.ckpt"
    if not path.is_file():
        raise MiniGPTError(f"checkpoint {path} not found: pass --ckpt RUN_DIR/last.ckpt (or best.ckpt) of a training run")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MiniGPTError(f"cannot read checkpoint {path} ({type(exc).__name__}): is it a minigpt .ckpt file?") from None
    if not isinstance(ckpt, dict) or PAYLOAD_KEY not in ckpt or "state_dict" not in ckpt:
        raise MiniGPTError(f"{path} is not a minigpt checkpoint (no model or tokenizer inside); train one with train.py")
    return ckpt


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Loaded:
    """Rebuild the model (in eval mode, on `device`) and tokenizer from a checkpoint file or run folder."""
    ckpt = read(path)
    payload = ckpt[PAYLOAD_KEY]
    model = GPT(GPTConfig(**payload["model_config"]))
    state = {k.removeprefix(MODEL_PREFIX): v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise MiniGPTError(f"{path} has no complete model weights for its config; use a checkpoint written by train.py") from None
    enc = tok.from_dict(payload["tokenizer"])
    if enc.n_vocab != model.config.vocab_size:
        raise MiniGPTError(
            f"{path}: tokenizer has {enc.n_vocab} tokens but the model has {model.config.vocab_size}; the file is corrupt"
        )
    return Loaded(model.to(device).eval(), enc, payload)
