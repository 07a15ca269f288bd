"""Head importance by ablation: how much the loss on a text rises when one attention head's output is zeroed.

A head's output is its slice of the concatenated head outputs that the layer's ``attn.c_proj`` reads, so zeroing
it is the same as zeroing that slice's columns of ``c_proj``'s weight. `heads_zeroed` does it with forward
pre-hooks for the duration of a ``with`` block, leaving the model (and its training path) untouched.

The loss is measured on `Windows` laid out as `minigpt eval` lays them out (`minigpt.evaluate.windows`): a
text's own tokens (`text_windows`), or the validation split of a corpus that a checkpoint was trained on
(`corpus_windows`, through `minigpt.evaluate.corpus_tokens`), of which an evenly spread sample is kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F
from torch import Tensor

from minigpt import evaluate
from minigpt.errors import NOT_FINITE, MiniGPTError
from minigpt.inspection.maps import hooked
from minigpt.model import GPT

DEFAULT_WINDOWS = 16


@dataclass(frozen=True)
class Windows:
    """Token windows to measure a loss on, and which of their targets count."""

    rows: Tensor
    """(n, T + 1) int64: the inputs of window i are ``rows[i, :-1]``, its targets ``rows[i, 1:]``."""
    scored: Tensor
    """(n, T) bool: the targets that count (each token of the text counts once)."""
    source: str
    """What the windows were taken from, for people: "the prompt", "16 windows of val split of input.txt"."""

    @property
    def tokens(self) -> int:
        """How many targets count."""
        return int(self.scored.sum())


@dataclass(frozen=True)
class Importance:
    """The loss with every head in place and its change (ablated minus intact) when each head alone is zeroed."""

    base_loss: float
    """Mean loss in nats per scored token, nothing ablated."""
    loss_change: Tensor
    """(n_layer, n_head): how much the loss rises (nats per token) without that head; negative where it falls."""
    tokens: int
    """How many tokens the loss was measured on."""
    source: str
    """What they were taken from (`Windows.source`)."""


def windows_over(ids: Tensor, block_size: int, source: str, most: int | None = None) -> Windows:
    """`minigpt eval`'s windows over `ids` (N,) (default stride: half the context), every token after the first
    scored once; with `most`, only that many of them, spread evenly over the text (each still scoring its own)."""
    if ids.numel() < 2:
        raise MiniGPTError(
            f"cannot measure head importance on {source}: {ids.numel()} token(s) leave nothing to predict; use a longer text"
        )
    spans = evaluate.windows(ids.numel(), block_size, max(block_size // 2, 1))
    if most is not None and most < len(spans):
        spans = spans[np.unique(np.linspace(0, len(spans) - 1, num=most).round().astype(np.int64))]
        source = f"{len(spans)} windows of {source}"
    length = min(block_size, ids.numel() - 1)
    starts, counts = spans.unbind(1)
    rows = evaluate.window_rows(ids, starts, length)  # (n, T+1)
    scored = torch.arange(length) >= length - counts[:, None]  # (n, T): the last `count` targets of each
    return Windows(rows, scored, source)


def text_windows(ids: list[int], block_size: int, source: str = "the prompt") -> Windows:
    """The windows of a text: every token of it predicted from those before it (a long one slides)."""
    return windows_over(torch.tensor(ids, dtype=torch.long), block_size, source)


def corpus_windows(
    spec: str, enc: tiktoken.Encoding, block_size: int, val_fraction: float, most: int = DEFAULT_WINDOWS,
    cache_dir: Path | None = None,
) -> Windows:  # fmt: skip
    """`most` windows spread over the validation split that training with `val_fraction` made of the corpus
    `spec` (the text ``minigpt eval --split val`` scores)."""
    tokens = evaluate.corpus_tokens(spec, enc, "val", val_fraction, cache_dir)
    return windows_over(tokens.ids, block_size, f"the val split of {spec}", most)


@contextmanager
def heads_zeroed(model: GPT, heads: Tensor) -> Iterator[None]:
    """Inside the block, the output of every head marked True in `heads` (n_layer, n_head) is zeroed before
    its layer's output projection; the hooks that do it are removed on the way out."""
    config = model.config
    if heads.shape != (config.n_layer, config.n_head):
        raise ValueError(f"heads must be ({config.n_layer}, {config.n_head}), got {tuple(heads.shape)}")
    drop = heads.bool().repeat_interleave(config.n_embd // config.n_head, dim=1)  # (L, C)

    def zeroing(drop_layer: Tensor):
        def hook(module: torch.nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            y = args[0]  # (B, T, C): the heads' outputs side by side
            return (y.masked_fill(drop_layer.to(y.device), 0.0),)

        return hook

    with hooked(block.attn.c_proj.register_forward_pre_hook(zeroing(d)) for d, block in zip(drop, model.transformer.h)):
        yield


@torch.inference_mode()
def mean_loss(model: GPT, windows: Windows, batch_size: int = 32) -> float:
    """Mean loss in nats over the scored targets of `windows` (run in batches on the model's device)."""
    device = next(model.parameters()).device
    nats = 0.0
    for rows, scored in zip(windows.rows.split(batch_size), windows.scored.split(batch_size)):
        rows = rows.to(device)
        logits = model(rows[:, :-1])  # (b, T, V)
        nll = F.cross_entropy(logits.float().transpose(1, 2), rows[:, 1:], reduction="none")  # (b, T)
        nats += nll[scored.to(device)].to("cpu", torch.float64).sum().item()
    return nats / windows.tokens


def head_importance(model: GPT, windows: Windows, batch_size: int = 32) -> Importance:
    """The loss on `windows` with every head, and its change when each head alone is zeroed (eval mode)."""
    config = model.config
    was_training = model.training
    model.eval()
    try:
        base = mean_loss(model, windows, batch_size)
        if not math.isfinite(base):
            raise MiniGPTError(NOT_FINITE)
        change = torch.zeros(config.n_layer, config.n_head, dtype=torch.float64)
        for layer in range(config.n_layer):
            for head in range(config.n_head):
                one = torch.zeros(config.n_layer, config.n_head, dtype=torch.bool)
                one[layer, head] = True
                with heads_zeroed(model, one):
                    change[layer, head] = mean_loss(model, windows, batch_size) - base
    finally:
        model.train(was_training)
    return Importance(base, change, windows.tokens, windows.source)
