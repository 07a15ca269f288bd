"""Attention maps of every layer and head, their aggregates, and per-head statistics (torch only).

Maps come from the model's explicit attention path (softmax(QKᵀ/√d_k + causal mask)) run in eval mode
under `torch.no_grad`; training keeps the fused SDPA kernel. Every map is indexed [query, key].
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from minigpt.model import GPT

logger = logging.getLogger(__name__)

AGGREGATES = ("mean", "rollout")

# Induction is measured on random tokens repeated twice; this many per half (or fewer in a small model).
INDUCTION_LENGTH = 64
INDUCTION_BATCH = 4


@dataclass
class AttentionMaps:
    """The attention weights of one sequence and the ids they belong to."""

    weights: Tensor
    """(n_layer, n_head, T, T) float32 on the CPU; row i is what query i attends to."""
    ids: list[int]
    """The T token ids that were run (the last `block_size` of those asked for)."""
    logits: Tensor
    """(T, vocab) logits of the same pass, equal to `model(ids)`."""


@dataclass
class HeadStats:
    """Per-head scores, each a (n_layer, n_head) tensor; see `head_stats` for the definitions."""

    entropy: Tensor
    previous_token: Tensor
    first_token: Tensor
    induction: Tensor

    def kinds(self) -> dict[str, Tensor]:
        """Name → scores, in the order they are reported."""
        return {
            "previous_token": self.previous_token,
            "first_token": self.first_token,
            "induction": self.induction,
            "entropy": self.entropy,
        }


_LOCKS: weakref.WeakKeyDictionary[torch.nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def in_use(model: torch.nn.Module) -> threading.RLock:
    """`model`'s lock, to hold while using it from Python (`minigpt.api`): ablation, the logit lens and patching
    hook the model for their whole run (`hooked`), and changed what another thread sampled meanwhile; sampling and
    scoring hold it for each step. Re-entrant, one per model."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextmanager
def hooked(handles: Iterable[RemovableHandle]) -> Iterator[None]:
    """Inside the block the hooks of `handles` (just registered) act; on the way out, however it is left, they are
    removed, so the model runs as it did before."""
    with ExitStack() as stack:
        for handle in handles:
            stack.enter_context(handle)  # a RemovableHandle removes its hook on exit
        yield


@contextmanager
def inference(model: GPT) -> Iterator[None]:
    """Eval mode (no dropout) and no autograd for the block; the model's previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def extract(model: GPT, ids: Sequence[int]) -> AttentionMaps:
    """Run `ids` through `model` once and return the attention weights of every layer and head."""
    if not ids:
        raise ValueError("cannot extract attention from an empty sequence")
    block_size = model.config.block_size
    if len(ids) > block_size:
        logger.warning("%d tokens exceed block_size %d: keeping the last %d", len(ids), block_size, block_size)
        ids = ids[-block_size:]
    device = next(model.parameters()).device
    idx = torch.tensor([list(ids)], dtype=torch.long, device=device)  # (1, T)
    with inference(model):
        logits, weights = model.forward_with_attention(idx)  # (1, T, V), (L, 1, H, T, T)
    return AttentionMaps(weights[:, 0].float().cpu(), list(ids), logits[0].float().cpu())


def mean_over_heads(weights: Tensor) -> Tensor:
    """(L, H, T, T) → (L, T, T): the average map of the given heads in each layer."""
    return weights.mean(dim=1)


def rollout(weights: Tensor) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): (L, H, T, T) → (L, T, T).

    Each layer's map is the mean over heads plus the identity (the residual connection), rows renormalised;
    entry l is the product of those maps through layers 0..l, i.e. how much each input token reaches
    query i after layer l.
    """
    T = weights.size(-1)
    eye = torch.eye(T, dtype=weights.dtype, device=weights.device)
    per_layer = mean_over_heads(weights) + eye  # (L, T, T)
    per_layer = per_layer / per_layer.sum(dim=-1, keepdim=True)
    # Layers compose in order, so this product cannot be batched.
    flows, flow = [], eye
    for layer_map in per_layer:
        flow = layer_map @ flow
        flows.append(flow)
    return torch.stack(flows)


def aggregate(weights: Tensor, how: str) -> Tensor:
    """(L, H, T, T) → (L, T, T) with `how` in `AGGREGATES`."""
    if how == "mean":
        return mean_over_heads(weights)
    if how == "rollout":
        return rollout(weights)
    raise ValueError(f"unknown aggregate {how!r}; use one of {AGGREGATES}")


def entropy(weights: Tensor) -> Tensor:
    """Mean entropy in nats of the attention rows: (..., T, T) → (...); 0·log 0 counts as 0."""
    return -torch.special.xlogy(weights, weights).sum(dim=-1).mean(dim=-1)


def previous_token_score(weights: Tensor) -> Tensor:
    """Mean weight on position i−1 over queries i ≥ 1: (..., T, T) → (...); NaN when T = 1."""
    return weights.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=-1)


def first_token_score(weights: Tensor) -> Tensor:
    """Mean weight on position 0 (the "sink") over queries i ≥ 1, since query 0 can see nothing else."""
    return weights[..., 1:, 0].mean(dim=-1)


def induction_distances(n: int, rows: int = INDUCTION_BATCH) -> list[int]:
    """The repeat distance of each detector row: from n (two halves) down to about n/2, so that a head that
    always looks a fixed distance back matches at most one row, while an induction head matches them all."""
    return [max(2, round(n * (1 - b / (2 * rows)))) for b in range(rows)]


def induction_score(model: GPT, length: int | None = None, seed: int = 0) -> Tensor:
    """(n_layer, n_head) mean weight that a head puts on the token after the previous occurrence of the
    current token, on 2·`length` random tokens that repeat with a period d (row b of the batch uses the
    b-th of `induction_distances`), over the queries that have a previous occurrence.
    """
    config = model.config
    n = length or min(INDUCTION_LENGTH, config.block_size // 2, config.vocab_size)
    if length is None and n < 2:  # a context of 1 to 3 positions holds no repeat: nothing to measure
        return torch.full((config.n_layer, config.n_head), float("nan"))
    if not 2 <= n <= min(config.block_size // 2, config.vocab_size):
        raise ValueError(f"induction length {n} does not fit block_size {config.block_size}")
    generator = torch.Generator().manual_seed(seed)
    distances = induction_distances(n)
    # Each row cycles through d distinct tokens, so each token after the first d has exactly one previous
    # occurrence in any window of d, d positions back.
    rows = [
        torch.rand(config.vocab_size, generator=generator).argsort()[:d].repeat(2 * n // d + 1)[: 2 * n]
        for d in distances
    ]
    idx = torch.stack(rows).to(next(model.parameters()).device)  # (B, 2n)
    with inference(model):
        _, weights = model.forward_with_attention(idx)  # (L, B, H, 2n, 2n)
    # Query i ≥ d repeats the token at i−d; the token after that one sits at i−d+1: diagonal offset 1−d,
    # whose first entry (query d−1) has no previous occurrence yet.
    scores = [
        weights[:, b].float().diagonal(offset=1 - d, dim1=-2, dim2=-1)[..., 1:].mean(dim=-1)  # (L, H)
        for b, d in enumerate(distances)
    ]
    return torch.stack(scores).mean(dim=0).cpu()  # rows weigh alike


def head_stats(model: GPT, weights: Tensor, seed: int = 0) -> HeadStats:
    """Statistics of every head: entropy, previous-token and first-token scores on `weights`
    (n_layer, n_head, T, T), and the induction score on a repeated random sequence.
    """
    return HeadStats(
        entropy=entropy(weights),
        previous_token=previous_token_score(weights),
        first_token=first_token_score(weights),
        induction=induction_score(model, seed=seed),
    )


def top_heads(scores: Tensor, k: int, largest: bool = True) -> list[tuple[int, int, float]]:
    """The `k` best (layer, head, score) of an (n_layer, n_head) score table, NaNs left out."""
    n_head = scores.size(1)
    flat = scores.flatten()
    valid = (~flat.isnan()).nonzero().flatten()
    order = flat[valid].argsort(descending=largest)[:k]
    return [(int(i) // n_head, int(i) % n_head, float(flat[i])) for i in valid[order]]
