"""What a model can be loaded from: a minigpt checkpoint or run folder, a Hugging Face GPT-2 folder, or
``hf:REPO_ID``. `minigpt generate`, `attention`, `eval` and `train --init` all take any of them."""

from __future__ import annotations

import torch

from minigpt import checkpoint
from minigpt.checkpoint import Loaded
from minigpt.hf import pretrained as hf


def is_pretrained(source: str) -> bool:
    """True for a Hugging Face GPT-2 folder or ``hf:REPO_ID``, False for (what should be) a minigpt checkpoint."""
    return hf.is_pretrained_source(source)


def resolve(source: str) -> str:
    """The file a minigpt run folder means for using its model (`minigpt.checkpoint.file_to_use`); any other
    source as it is."""
    return source if is_pretrained(source) else str(checkpoint.file_to_use(source))


def load(source: str, device: str | torch.device = "cpu") -> Loaded:
    """The model (in eval mode, on `device`) and tokenizer of `source`, with its checkpoint's payload (None for a
    Hugging Face model): ``load(source).val_fraction`` is how its run split its corpus. A run folder gives its
    best checkpoint (see `minigpt.checkpoint.file_to_use`)."""
    if is_pretrained(source):
        return hf.load_pretrained(source, device)
    return checkpoint.load(source, device)
