"""Tokenizers: every one is a `tiktoken.Encoding`, built from a spec string and serialisable to plain data
(`to_dict`, inside checkpoints) or to a JSON file (`save`, beside token shards).

Specs:
- ``bytes``: the 256 byte values plus ``<|endoftext|>``; works on any text, offline.
- ``bpe:<vocab_size>``: a byte-level BPE trained with rustbpe on the training text, plus ``<|endoftext|>``.
- a tiktoken name (``gpt2``, ``cl100k_base``, ...): downloaded once by tiktoken, then cached.

Text is always encoded as ordinary text, so a literal ``<|endoftext|>`` in a document is not the special
token; the special token only ever comes from `eot_id`.

A tokenizer read from a file is trusted only once checked: its ordinary tokens take the lowest ids that its
special tokens leave free (the specials first, last or between; ids above the ordinary tokens may go unused,
as in cl100k_base: `unused_ids`, never sampled), and its split pattern loses no text (`split_patterns`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tiktoken

from minigpt import split_patterns
from minigpt.errors import MiniGPTError

EOT = "<|endoftext|>"

# GPT-2's split pattern: it matches every character, so byte-level encodings lose nothing.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

_MAX_BPE_VOCAB = 1 << 20
MAX_ID = 1 << 31
"""Ids are stored as int32 at most (shards, tensors)."""


def build_tokenizer(spec: str, training_text: Iterable[str] | None = None) -> tiktoken.Encoding:
    """Build the tokenizer named by `spec`; ``bpe:N`` trains on `training_text` (an iterable of strings)."""
    if spec == "bytes":
        return byte_tokenizer()
    if spec.startswith("bpe:"):
        return _train_bpe(spec, _parse_bpe_size(spec), training_text)
    return _pretrained(spec)


def needs_training(spec: str) -> bool:
    """True when building `spec` requires training text (so callers can stream it only when needed)."""
    return spec.startswith("bpe:")


def byte_tokenizer() -> tiktoken.Encoding:
    """256 byte tokens and ``<|endoftext|>`` as token 256."""
    ranks = {bytes([i]): i for i in range(256)}
    return tiktoken.Encoding("bytes", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 256})


def safe_cut(enc: tiktoken.Encoding) -> re.Pattern[str] | None:
    """Where text may be cut without changing `enc`'s tokens (`split_patterns.safe_cut`); None: nowhere."""
    return split_patterns.safe_cut(enc._pat_str)


def is_byte_tokenizer(enc: tiktoken.Encoding) -> bool:
    """True when `enc` is `byte_tokenizer()` in all but name: every byte its own token, id = byte value, and
    GPT-2's split pattern, which loses no character (so encoding is the text's own bytes)."""
    if enc.n_vocab != 257 or enc.special_tokens_set != {EOT} or enc.encode_single_token(EOT) != 256:
        return False
    if enc._pat_str != GPT2_PATTERN:
        return False
    return all(enc.decode_single_token_bytes(i) == bytes([i]) for i in range(256))


def _parse_bpe_size(spec: str) -> int:
    size = spec.removeprefix("bpe:")
    if not (size.isascii() and size.isdigit()) or not 257 <= int(size) <= _MAX_BPE_VOCAB:
        raise MiniGPTError(
            f"bad tokenizer '{spec}': write bpe:<vocab_size> with a size from 257 to {_MAX_BPE_VOCAB}, e.g. bpe:4096"
        )
    return int(size)


def _train_bpe(spec: str, vocab_size: int, training_text: Iterable[str] | None) -> tiktoken.Encoding:
    import rustbpe  # only needed when training a vocabulary

    if training_text is None:
        raise ValueError("bpe tokenizers need training text")
    logging.getLogger("rustbpe").setLevel(logging.WARNING)  # its INFO logs the training's every step
    bpe = rustbpe.Tokenizer()
    # One id is kept for <|endoftext|>, so the whole vocabulary is exactly vocab_size.
    bpe.train_from_iterator(iter(training_text), vocab_size=vocab_size - 1)
    ranks = dict(bpe.get_mergeable_ranks())
    if len(ranks) < vocab_size - 1:
        raise MiniGPTError(
            f"the training text is too small or too repetitive for {spec}: it only supports {len(ranks) + 1} tokens; "
            f"use a smaller vocabulary (e.g. bpe:{max(257, len(ranks) + 1)}) or the bytes tokenizer"
        )
    return tiktoken.Encoding(spec, pat_str=bpe.get_pattern(), mergeable_ranks=ranks, special_tokens={EOT: len(ranks)})


def _pretrained(name: str) -> tiktoken.Encoding:
    if name not in tiktoken.list_encoding_names():
        known = ", ".join(["bytes", "bpe:<vocab_size>", *tiktoken.list_encoding_names()])
        raise MiniGPTError(f"unknown tokenizer '{name}': use one of {known}")
    try:
        enc = tiktoken.get_encoding(name)
    except Exception as exc:  # tiktoken raises requests/OS/blobfile errors of many kinds when offline
        raise MiniGPTError(
            f"could not load tiktoken encoding '{name}' ({type(exc).__name__}): it downloads once and needs the "
            "network or a filled TIKTOKEN_CACHE_DIR; offline, use --tokenizer bytes or bpe:<vocab_size>"
        ) from None
    if EOT not in enc.special_tokens_set:
        raise MiniGPTError(f"tokenizer '{name}' has no {EOT} token; use gpt2, r50k_base, p50k_base or cl100k_base")
    return enc


def eot_id(enc: tiktoken.Encoding) -> int:
    """The id of ``<|endoftext|>``, which separates documents and starts empty prompts."""
    return enc.encode_single_token(EOT)


def encode(enc: tiktoken.Encoding, text: str) -> list[int]:
    """Encode `text` with every special token treated as ordinary text; MiniGPTError if the split pattern fails."""
    with _pattern_failures(enc):
        return enc.encode(text, allowed_special=set(), disallowed_special=())


def encode_batch(enc: tiktoken.Encoding, texts: list[str], threads: int) -> list[list[int]]:
    """`encode` over many texts at once, on `threads` threads (tiktoken releases the GIL)."""
    with _pattern_failures(enc):
        return enc.encode_batch(texts, num_threads=threads, allowed_special=set(), disallowed_special=())


@contextmanager
def _pattern_failures(enc: tiktoken.Encoding) -> Iterator[None]:
    """Turn a split pattern's failure on some text into one line. tiktoken's `encode` (unlike `encode_ordinary`,
    which panics) raises ValueError when the regex engine gives up; a pattern matching empty text still makes it
    panic, with a pyo3 PanicException that derives from BaseException, not Exception. The patterns of files are
    checked when loaded (`split_patterns`), so this is for text that the check's probe did not foresee."""
    try:
        yield
    except ValueError as err:
        raise MiniGPTError(f"tokenizer {enc.name} cannot split this text with its pattern ({err})") from None
    except BaseException as err:
        if type(err).__module__ != "pyo3_runtime":
            raise
        first = str(err).splitlines()[0] if str(err) else "no message"
        raise MiniGPTError(f"tokenizer {enc.name} failed inside tiktoken on this text ({first}): its split pattern is unusable") from None


def to_dict(enc: tiktoken.Encoding) -> dict[str, Any]:
    """Plain data (str, int, bytes, list, dict) that rebuilds `enc` with `from_dict`, for checkpoints: the ordinary
    tokens in id order take the ids 0, 1, 2, ... that no special token has."""
    ranks = enc._mergeable_ranks  # tiktoken has no public accessor for its ranks
    by_rank = sorted(ranks.items(), key=lambda item: item[1])
    if [rank for _, rank in by_rank] != _ordinary_ids(len(by_rank), list(enc._special_tokens.values())):
        raise ValueError(f"tokenizer {enc.name} leaves ids unused below an ordinary token or gives one id two tokens")
    return {
        "name": enc.name,
        "pattern": enc._pat_str,
        "ranks": [token for token, _ in by_rank],
        "special_tokens": dict(enc._special_tokens),
    }


def digest(enc: tiktoken.Encoding) -> str:
    """A short hex digest of everything that decides `enc`'s ids: its ranks, pattern and special tokens."""
    record = to_dict(enc)  # its name changes no id, so it is left out
    hashed = hashlib.sha256(record["pattern"].encode())
    for token in record["ranks"]:
        hashed.update(len(token).to_bytes(4, "little") + token)
    hashed.update(json.dumps(record["special_tokens"], sort_keys=True).encode())
    return hashed.hexdigest()[:12]


def from_dict(data: Any) -> tiktoken.Encoding:
    """Rebuild the tokenizer saved by `to_dict`, without any network access.

    Raises ValueError naming the first problem when `data` is not a well-formed tokenizer record; it is
    checked before tiktoken sees it, since tiktoken aborts on duplicate ids instead of raising.
    """
    _check_record(data)
    problem = split_patterns.problem(data["pattern"])
    if problem:
        raise ValueError(f"tokenizer split pattern {problem}")
    ids = _ordinary_ids(len(data["ranks"]), list(data["special_tokens"].values()))
    ranks = dict(zip(data["ranks"], ids))
    return tiktoken.Encoding(
        data["name"], pat_str=data["pattern"], mergeable_ranks=ranks, special_tokens=dict(data["special_tokens"])
    )


def save(enc: tiktoken.Encoding, path: Path) -> None:
    """Write `enc` to `path` as JSON: the `to_dict` record with each token's bytes in base64."""
    record = to_dict(enc)
    record["ranks"] = [base64.b64encode(token).decode("ascii") for token in record["ranks"]]
    path.write_text(json.dumps(record))


def load(path: Path) -> tiktoken.Encoding:
    """The tokenizer `save` wrote to `path`; OSError, or ValueError/KeyError/TypeError for a damaged file."""
    record = json.loads(path.read_text())
    record["ranks"] = [base64.b64decode(token) for token in record["ranks"]]
    return from_dict(record)


def _check_record(data: Any) -> None:
    if not isinstance(data, dict) or not {"name", "pattern", "ranks", "special_tokens"} <= data.keys():
        raise ValueError("tokenizer record must have name, pattern, ranks and special_tokens")
    if not isinstance(data["name"], str) or not isinstance(data["pattern"], str):
        raise ValueError("tokenizer name and pattern must be strings")
    ranks, specials = data["ranks"], data["special_tokens"]
    if not isinstance(ranks, list) or not all(isinstance(t, bytes) and t for t in ranks):
        raise ValueError("tokenizer ranks must be a list of non-empty byte strings")
    if len(set(ranks)) != len(ranks):
        raise ValueError("tokenizer ranks repeat a token")
    # Byte-level BPE: every single byte must be a token, or some text could not be encoded at all.
    if not {bytes([b]) for b in range(256)} <= set(ranks):
        raise ValueError("tokenizer ranks lack some of the 256 single bytes")
    ids = list(specials.values()) if isinstance(specials, dict) else []
    if not isinstance(specials, dict) or not all(isinstance(k, str) and type(v) is int for k, v in specials.items()):
        raise ValueError("tokenizer special_tokens must map strings to integer ids")
    if len(set(ids)) != len(ids) or not all(0 <= i < MAX_ID for i in ids):
        raise ValueError(f"tokenizer special token ids must be distinct and from 0 to {MAX_ID - 1}")


def unused_ids(enc: tiktoken.Encoding, vocab_size: int) -> list[int]:
    """The ids below `vocab_size` that name no token: gaps among special tokens (cl100k_base leaves 100256
    and 100261-100275 unused) and a model's rows past the tokenizer's. A sampler must never draw them: there is
    no text to show for them. The ordinary tokens hold the lowest free ids, so the unused ones lie above the
    highest ordinary id."""
    first = max(enc._mergeable_ranks.values(), default=-1) + 1
    specials = set(enc._special_tokens.values())
    return [i for i in range(first, vocab_size) if i not in specials]


def _ordinary_ids(n_ranks: int, special_ids: list[int]) -> list[int]:
    """The ids of `n_ranks` ordinary tokens, in order, beside special tokens numbered `special_ids`: those that
    the specials leave free, from 0 up."""
    taken = set(special_ids)
    return [i for i in range(n_ranks + len(taken)) if i not in taken][:n_ranks]

