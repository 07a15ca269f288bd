"""Sampling from a GPT: KV-cache decoding, sampling controls, stop conditions, batches and streaming.

The core, `sample_tokens`, works on token ids only; `stream` is the thin text layer on top of it
(tokenizer, stop strings, UTF-8-safe streaming) and `generate` collects its pieces into whole completions.
All three take one `SamplingSettings`, checked once when it is made.

"The no-cache path" means: the logits for the next token are ``model(seq[:, -block_size:])[:, -1]``.
The KV cache reproduces exactly that. While the sequence fits the window, positions never move, so the
cache is extended one token per step. Once the sequence is longer than ``block_size`` the window slides
by one every step, every token's learned position changes, and no cached key or value stays valid: each
step then runs the window in one full forward pass, the only way to match the no-cache logits.
The sampling loop holds at most ``block_size + 1`` tokens: the window, plus the one token that tells
`next_logits` the window has slid. Memory and time per token stay flat however long generation runs.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import math
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import tiktoken
import torch
from torch import Tensor

from minigpt import checks
from minigpt import tokenizer as tok
from minigpt.errors import NOT_FINITE, MiniGPTError
from minigpt.model import GPT, KVCache

log = logging.getLogger(__name__)


# ---- sampling controls: pure functions over logits (B, vocab) ------------------------------------


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """Make tokens marked in `seen` (B, vocab) less likely: positive logits / penalty, negative ones * penalty."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    # A huge penalty must not turn a whole row into -inf, which softmax would make NaN.
    penalized = penalized.clamp(min=torch.finfo(logits.dtype).min)
    return torch.where(seen, penalized, logits)


def apply_top_k(logits: Tensor, k: int | None) -> Tensor:
    """Keep the `k` largest logits of each row (k clamped to the vocabulary); set the rest to -inf."""
    if k is None or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: Tensor, p: float | None) -> Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability mass reaches `p`."""
    # p = 1 keeps everything by definition; the float cumsum could otherwise drop a tiny tail.
    if p is None or p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens; 0 for the first, so it stays
    drop_sorted = mass_before >= p
    drop_sorted[:, 0] = False  # the most likely token always stays, even for a p below float32's resolution
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: Tensor,
    generators: Sequence[torch.Generator],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """Next ids (B,) from logits (B, vocab): argmax when `temperature` is 0, else row i draws with `generators[i]`."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    # Shift the maximum to 0 before dividing, so a tiny temperature gives -inf for the others, never inf or NaN.
    logits = logits.float()
    scaled = (logits - logits.amax(dim=-1, keepdim=True)) / max(temperature, torch.finfo(torch.float32).tiny)
    logits = apply_top_p(apply_top_k(scaled, top_k), top_p)
    probs = logits.softmax(dim=-1)
    # One generator per row, so a row draws the same numbers whether it is sampled alone or in a batch.
    return torch.cat([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, generators, strict=True)])


def make_generators(seed: int | None, n: int, device: str | torch.device = "cpu") -> list[torch.Generator]:
    """`n` generators, the i-th seeded from (seed, i) alone; a random base seed when `seed` is None."""
    base = secrets.randbits(63) if seed is None else seed
    generators = []
    for i in range(n):
        digest = hashlib.blake2b(f"{base}:{i}".encode(), digest_size=8).digest()
        generators.append(torch.Generator(device).manual_seed(int.from_bytes(digest, "little")))
    return generators


# ---- the settings: one checked object for every layer --------------------------------------------


MAX_NUM_SAMPLES = 1024
"""Samples drawn in one batch at most: more is a typo, which would build its rows for minutes before failing."""


@dataclass(frozen=True)
class SamplingSettings:
    """How to complete a prompt. Made once and checked then: an out-of-range value raises `MiniGPTError`
    naming it. `sample_tokens` reads the token controls; the text layer also reads the rest."""

    max_new_tokens: int = 200
    """Most tokens per sample (>= 1)."""
    temperature: float = 0.8
    """Softmax temperature (>= 0); 0 = greedy (argmax)."""
    top_k: int | None = None
    """Sample only from the k most likely tokens (>= 1); None = all."""
    top_p: float | None = None
    """Nucleus sampling: the smallest set of tokens whose probability mass reaches p, in (0, 1]; None = all."""
    repetition_penalty: float = 1.0
    """Make tokens already in the prompt or completion less likely (>= 1; 1 = off)."""
    stop: tuple[str, ...] = ()
    """End a sample's text before the first of these strings (text layer only)."""
    num_samples: int = 1
    """Samples drawn together in one batch (text layer only: `sample_tokens` draws the rows of its `idx`)."""
    seed: int | None = None
    """Sample i is reproducible from (seed, i) alone; None = a random seed (text layer only: `sample_tokens`
    draws with the generators it is given)."""

    def __post_init__(self) -> None:
        if not isinstance(self.stop, (tuple, list)) or not all(isinstance(s, str) for s in self.stop):
            bad = next((s for s in self.stop if not isinstance(s, str)), self.stop) if isinstance(self.stop, (tuple, list)) else self.stop
            raise MiniGPTError(f"stop must be a sequence of strings, got {checks.shown(bad)}")
        object.__setattr__(self, "stop", tuple(checks.text(s, "stop string") for s in self.stop))  # immutable, as the rest
        self._check_types()
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise MiniGPTError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k <= 0:
            raise MiniGPTError(f"top_k must be a positive integer, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise MiniGPTError(f"top_p must be in (0, 1], got {self.top_p}")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty >= 1):
            raise MiniGPTError(f"repetition_penalty must be a finite number >= 1 (1 = off), got {self.repetition_penalty}")
        if self.max_new_tokens < 1:
            raise MiniGPTError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 1 <= self.num_samples <= MAX_NUM_SAMPLES:
            raise MiniGPTError(f"num_samples must be from 1 to {MAX_NUM_SAMPLES}, got {self.num_samples}")
        if any(not s for s in self.stop):
            raise MiniGPTError("stop strings must not be empty")

    def _check_types(self) -> None:
        """From Python any value can arrive: each must be a number of the field's kind (a bool is no number;
        numpy's numbers are, and are stored as Python's)."""
        kinds = {"max_new_tokens": int, "num_samples": int, "top_k": int, "seed": int}
        for name in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "num_samples", "seed"):
            value, kind = checks.scalar(getattr(self, name)), kinds.get(name, float)
            optional = name in ("top_k", "top_p", "seed")
            if value is None and optional:
                continue
            if kind is int and checks.is_whole(value):
                if not -(2**63) <= value < 2**64:  # past any count or seed (and 4,300 digits break messages)
                    raise MiniGPTError(f"{name} must be a whole number below 2**64, got a {int(value).bit_length()}-bit one")
                object.__setattr__(self, name, int(value))
                continue
            if kind is float and checks.is_real(value):
                object.__setattr__(self, name, checks.real_number(value, name))  # an int too large for a float: one line
                continue
            what = "a whole number" if kind is int else "a number"
            raise MiniGPTError(f"{name} must be {what}{' or None' if optional else ''}, got {value!r}")


# ---- the core: ids in, ids out -----------------------------------------------------------------


def next_logits(model: GPT, seq: Tensor, cache: KVCache | None) -> Tensor:
    """Logits (B, vocab) for the token after `seq` (B, T), equal to ``model(seq[:, -block_size:])[:, -1]``.

    With `cache`, only the positions not yet cached are fed while `seq` fits the window.
    """
    block_size = model.config.block_size
    if cache is None or seq.size(1) > block_size:
        return model(seq[:, -block_size:])[:, -1]
    return model(seq[:, cache.length :], cache)[:, -1]


@torch.inference_mode()
def sample_tokens(
    model: GPT,
    idx: Tensor,
    settings: SamplingSettings,
    *,
    eot_id: int,
    generators: Sequence[torch.Generator],
    use_cache: bool = True,
    never: Sequence[int] = (),
) -> Iterator[Tensor]:
    """Yield the next ids (B,) of every row of `idx` (B, T), one step at a time, all rows in one forward pass,
    row i drawing with `generators[i]` under the token controls of `settings`; ids in `never` (ids that name
    no token) are never drawn.

    A row that has produced `eot_id` is finished: it yields `eot_id` from then on. Stops after
    `settings.max_new_tokens` steps or when every row is finished; the consumer may also stop early.
    """
    B = idx.size(0)
    held = model.config.block_size + 1
    cache = model.new_cache() if use_cache else None
    seq = idx
    seen = torch.zeros(B, model.config.vocab_size, dtype=torch.bool, device=idx.device)
    seen.scatter_(1, idx, True)
    finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
    never_ids = torch.tensor(list(never), dtype=torch.long, device=idx.device)
    for _ in range(settings.max_new_tokens):
        logits = next_logits(model, seq, cache)
        if not torch.isfinite(logits).all():  # else multinomial fails deep inside torch, or argmax picks junk
            raise MiniGPTError(NOT_FINITE)
        logits[:, never_ids] = -torch.inf
        logits = apply_repetition_penalty(logits, seen, settings.repetition_penalty)
        ids = sample_next(logits, generators, settings.temperature, settings.top_k, settings.top_p)
        ids = ids.masked_fill(finished, eot_id)
        finished |= ids == eot_id
        seen.scatter_(1, ids[:, None], True)
        seq = torch.cat([seq, ids[:, None]], dim=1)[:, -held:]  # (B, T) -> (B, min(T + 1, block_size + 1))
        yield ids
        if finished.all():
            return


# ---- the text layer: prompt in, text pieces out ---------------------------------------------------


def prompt_ids(enc: tiktoken.Encoding, prompt: str, block_size: int) -> list[int]:
    """The prompt's ids, ``<|endoftext|>`` alone for an empty prompt, cut to the last `block_size` ids."""
    ids = tok.encode(enc, prompt) or [tok.eot_id(enc)]
    if len(ids) > block_size:
        log.warning("the prompt has %d tokens; keeping its last %d (the context window)", len(ids), block_size)
        ids = ids[-block_size:]
    return ids


class _TextStream:
    """One row's text: whole UTF-8 characters only, cut at the first stop string, never showing part of one."""

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = stop
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.held = ""  # decoded text not yet released: it could be the start of a stop string
        self.done = False

    def push(self, data: bytes) -> str:
        """Add a token's bytes; return the text now safe to show (and set `done` on a stop string)."""
        self.held += self.decoder.decode(data)
        hits = [i for i in (self.held.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.done = True
            return self.held[: min(hits)]
        keep = max((n for s in self.stop for n in range(1, len(s)) if self.held.endswith(s[:n])), default=0)
        out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return out

    def close(self) -> str:
        """The held text (and any unfinished character, replaced): the row ended without a stop string."""
        self.done = True
        return self.held + self.decoder.decode(b"", final=True)


def generate(
    model: GPT, enc: tiktoken.Encoding, prompt: str, settings: SamplingSettings = SamplingSettings()
) -> list[str]:
    """The finished completion of each of the `settings.num_samples` samples of `stream`."""
    texts = [""] * settings.num_samples
    for i, piece in stream(model, enc, prompt, settings):
        texts[i] += piece
    return texts


def stream(
    model: GPT, enc: tiktoken.Encoding, prompt: str, settings: SamplingSettings = SamplingSettings()
) -> Iterator[tuple[int, str]]:
    """Complete `prompt` `settings.num_samples` times in one batch: (sample index, text piece) pairs, as soon
    as the text is safe to show.

    Generation runs as the pieces are pulled. Sample i is reproducible from (seed, i) alone. A sample ends
    at ``<|endoftext|>``, at a stop string (neither is shown) or after `settings.max_new_tokens` tokens.
    """
    device = next(model.parameters()).device
    ids = prompt_ids(enc, prompt, model.config.block_size)
    idx = torch.tensor([ids] * settings.num_samples, device=device)  # (num_samples, T)
    generators = make_generators(settings.seed, settings.num_samples, device)
    never = tok.unused_ids(enc, model.config.vocab_size)
    steps = sample_tokens(model, idx, settings, eot_id=tok.eot_id(enc), generators=generators, never=never)
    return _text_pieces(steps, enc, [_TextStream(settings.stop) for _ in range(settings.num_samples)])


def _text_pieces(
    steps: Iterator[Tensor], enc: tiktoken.Encoding, streams: list[_TextStream]
) -> Iterator[tuple[int, str]]:
    """Turn each step's ids (B,) into (row, text) pieces; stop pulling steps once every row is done."""
    eot = tok.eot_id(enc)
    for step in steps:
        for i, token in enumerate(step.tolist()):
            stream = streams[i]
            if stream.done:
                continue
            text = stream.close() if token == eot else stream.push(enc.decode_single_token_bytes(token))
            if text:
                yield i, text
        if all(s.done for s in streams):
            return
    for i, stream in enumerate(streams):
        if not stream.done and (text := stream.close()):
            yield i, text
