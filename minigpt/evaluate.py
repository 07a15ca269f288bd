"""Held-out evaluation: the loss of a GPT on a whole text, every token scored exactly once.

`corpus_tokens` lays a corpus (or its train or val split) out exactly as `minigpt.data.prepare` writes a shard:
every document, and each part of one that the split cuts in two, preceded by one ``<|endoftext|>``. So the
val split of the training corpus gives the very tokens of ``val.bin``, and `score` measures what validation
measures, over every token instead of a sample of windows.

`score` slides a window of ``block_size`` tokens over the ids (the standard strided evaluation). The first
window scores all its targets; each later one moves on by `stride` and scores only the targets no window
scored before, so every token after the first window's is predicted from at least ``block_size - stride + 1``
tokens of context (33 of 64 with the default stride, half the window). The last window is moved back to end on
the last token, so all windows have the same length (they batch) and it too keeps a full context.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from minigpt import tokenizer as tok
from minigpt.data.corpus import open_corpus
from minigpt.data.files import Source
from minigpt.data.pieces import (
    CHUNK_CHARS,
    cut_at_lines,
    cut_source,
    source_length,
    split_documents,
)
from minigpt.data.prepare import DEFAULT_VAL_FRACTION, check_val_fraction
from minigpt.errors import NOT_FINITE, MiniGPTError
from minigpt.model import GPT

SPLITS = ("all", "train", "val")
MAX_BATCH_LOGITS = 1 << 28
"""The most logits one batch of `score` computes (1 GiB as float32; GPT-2's 50k vocabulary: 5 windows of 1024):
`--batch_size 100000` took 7 GB for a tiny model."""


@dataclass(frozen=True)
class Tokens:
    """The ids to score and the UTF-8 size of the text they encode (separators not counted, as in prepare)."""

    ids: Tensor  # (N,) int64
    n_bytes: int


@dataclass(frozen=True)
class Score:
    """The summed negative log-likelihood of `tokens` predicted tokens."""

    tokens: int
    nats: float

    @property
    def loss(self) -> float:
        """Mean loss in nats per token."""
        return self.nats / self.tokens

    @property
    def perplexity(self) -> float:
        """exp(loss); infinite where that overflows a float (a loss above ~709 nats)."""
        return math.inf if self.loss >= 709 else math.exp(self.loss)

    def bits_per_byte(self, n_bytes: int) -> float:
        """Bits per byte of a text of `n_bytes` UTF-8 bytes (loss × tokens / bytes / ln 2): compares tokenizers."""
        return self.nats / n_bytes / math.log(2)


@dataclass(frozen=True)
class Evaluation:
    """A model's loss on every token of a text, as ``minigpt eval`` reports it."""

    data: str
    split: str
    tokens: int
    bytes: int
    loss: float
    """Mean nats per token."""
    bits_per_byte: float
    """Loss x tokens / bytes / ln 2: compares models with different tokenizers."""
    perplexity: float

    def __str__(self) -> str:
        return (
            f"{self.data} ({self.split}): {self.tokens:,} tokens, {self.bytes:,} bytes: loss {self.loss:.4f} "
            f"nats/token, {self.bits_per_byte:.4f} bits/byte, perplexity {self.perplexity:.2f}"
        )


def corpus_tokens(
    spec: str, enc: tiktoken.Encoding, split: str = "all", val_fraction: float = DEFAULT_VAL_FRACTION,
    cache_dir: Path | None = None,
) -> Tokens:  # fmt: skip
    """The corpus `spec` (every document, or the ``train`` or ``val`` split that training with `val_fraction`
    made of it), encoded with `enc` in the layout of a prepared shard.

    Documents are streamed and encoded in pieces cut where tokens cannot change, as preparation does, so the ids are
    those of encoding each document whole, and memory holds the ids (8 bytes each) and one piece of text at a time
    rather than every document and a Python list of ids (~41 bytes per byte of text, measured)."""
    if split not in SPLITS:
        raise MiniGPTError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    sources = open_corpus(spec, cache_dir).sources()
    if split != "all":
        check_val_fraction(val_fraction)
        # prepare's own labelling, so the splits are the ones training used.
        labelled = split_documents(sources, val_fraction, source_length, cut_source)
        sources = (source for label, source in labelled if label == split)
    ids, n_bytes = _encode_documents(enc, sources)
    if len(ids) < 2:
        raise MiniGPTError(
            f"the {split} text of '{spec}' is shorter than 2 tokens, so there is nothing to predict: use more text"
        )
    return Tokens(torch.frombuffer(ids, dtype=torch.int64), n_bytes)


def _encode_documents(enc: tiktoken.Encoding, sources: Iterable[Source]) -> tuple[array, int]:
    """Every document's ids after one ``<|endoftext|>``, and the UTF-8 size of their text. Byte tokens are the text's
    own bytes, read as they come (any cut is safe); other documents are encoded in pieces cut where their tokens
    cannot change (`cut_at_lines`), as preparation cuts them."""
    eot = tok.eot_id(enc)
    byte_level = tok.is_byte_tokenizer(enc)
    ids = array("q")  # (N,) int64, grown in place: the tensor is made over it without a copy
    n_bytes = 0
    for source in sources:
        if byte_level:
            pieces: Iterable[str] = (piece for piece in source() if piece)
        else:
            pieces = cut_at_lines(source(), CHUNK_CHARS, tok.safe_cut(enc))
        for index, piece in enumerate(pieces):
            if index == 0:
                ids.append(eot)
            data = piece.encode()
            if byte_level:
                ids.frombytes(np.frombuffer(data, dtype=np.uint8).astype(np.int64).tobytes())
            else:
                ids.extend(tok.encode(enc, piece))
            n_bytes += len(data)
    return ids, n_bytes


def windows(n: int, block_size: int, stride: int) -> Tensor:
    """(start, count) of each window over `n` ids, as rows of a (K, 2) int64 tensor: its inputs are
    ``ids[start : start + T]``, T = min(block_size, n - 1), and it scores its last `count` targets; together the
    windows score ids 1 to n - 1 once each. Each starts `stride` after the last, the final one clamped to the end.
    A tensor, not a list of tuples: a 200 MB text has 12 million windows of 32 tokens."""
    length = min(block_size, n - 1)
    room = n - 1 - length  # how far the last window's start is from the first's
    starts = (torch.arange(-(-room // stride) + 1) * stride).clamp_(max=room)  # ceil(room / stride) + 1 windows
    ends = starts + length  # ids 1..end are scored once this window is
    return torch.stack([starts, torch.diff(ends, prepend=torch.zeros(1, dtype=ends.dtype))], dim=1)


def window_rows(ids: Tensor, starts: Tensor, length: int) -> Tensor:
    """(b, length + 1): the inputs and targets of the windows that begin at `starts` (b,)."""
    return ids[starts[:, None] + torch.arange(length + 1)]


@torch.inference_mode()
def score(model: GPT, ids: Tensor, stride: int | None = None, batch_size: int = 8) -> Score:
    """Sum the loss of every token of `ids` (N,) after the first, predicted with a sliding context (see the module
    docstring); `stride` defaults to half the context. Runs on the model's device, in eval mode."""
    block_size = model.config.block_size
    if stride is None:
        stride = max(block_size // 2, 1)
    if not 1 <= stride <= block_size:
        raise MiniGPTError(f"stride {stride} is out of range: use 1 to the model's block_size {block_size}")
    if batch_size < 1:
        raise MiniGPTError(f"batch size {batch_size} is out of range: use at least 1")
    if ids.numel() < 2:
        raise MiniGPTError(f"a text of {ids.numel()} token(s) has nothing to predict: use at least 2 tokens")
    spans = windows(ids.numel(), block_size, stride)
    length = min(block_size, ids.numel() - 1)
    # The loss does not depend on the batch: a batch far past what pays is cut to bound the logits' memory.
    batch_size = min(batch_size, max(1, MAX_BATCH_LOGITS // (length * model.config.vocab_size)))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nats = 0.0  # a Python float: float64, and MPS has no float64 tensors
    try:
        with tqdm(total=len(spans), desc="evaluating", unit="window", disable=None) as bar:
            for first in range(0, len(spans), batch_size):
                starts, counts = spans[first : first + batch_size].unbind(1)
                rows = window_rows(ids, starts, length).to(device)  # (b, T+1)
                logits = model(rows[:, :-1])  # (b, T, V)
                # float32 log-softmax even under bf16 autocast: the loss is a sum of many small terms.
                nll = F.cross_entropy(logits.float().transpose(1, 2), rows[:, 1:], reduction="none")  # (b, T)
                new = counts.to(device)
                scored = torch.arange(length, device=device) >= length - new[:, None]  # (b, T): the new targets
                nats += nll[scored].to("cpu", torch.float64).sum().item()
                bar.update(len(starts))
    finally:
        model.train(was_training)
    if not math.isfinite(nats):
        raise MiniGPTError(NOT_FINITE)
    return Score(int(spans[:, 1].sum()), nats)
