"""A folder of token shards: its `ShardMeta` record, and the check that the folder is whole before it is used.

The folder holds:

- ``train.bin`` / ``val.bin``: raw little-endian token ids, ``uint16`` when the vocabulary fits in 65536 ids,
  else ``uint32``; read them with ``numpy.memmap(path, dtype=meta.dtype, mode="r")``.
- ``tokenizer.json``: the tokenizer as `minigpt.tokenizer.save` writes it, so reusing the folder needs neither BPE
  training nor the network.
- ``meta.json``: `ShardMeta` as JSON (its keys are listed in `ShardMeta.to_json`).

A folder is trusted only after checking it (`verified`): meta.json parses with every key of the right type, each
shard's size is its token count times the item size and its SHA-256 matches, and the tokenizer loads with the
recorded vocabulary size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken

from minigpt import tokenizer as tok
from minigpt.errors import MiniGPTError

FORMAT_VERSION = 2
SPLITS = ("train", "val")
META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
LITTLE_ENDIAN = {"uint16": "<u2", "uint32": "<u4"}
"""The shard dtypes, each with its little-endian numpy spelling (the files are little-endian on every machine)."""
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class SplitStats:
    """One split's shard: its token count, the UTF-8 bytes of its text (without separators), its SHA-256."""

    tokens: int
    n_bytes: int
    sha256: str

    @property
    def bytes_per_token(self) -> float:
        """Bytes of text per token: turns a loss in nats/token into nats/byte, comparable across tokenizers."""
        return self.n_bytes / self.tokens


@dataclass(frozen=True)
class ShardMeta:
    """What a shard folder holds and how it was made: the record written as ``meta.json``."""

    source: str
    """The corpus spec the shards were made from."""
    fingerprint: str
    """The corpus content's fingerprint (``+`` the validation corpus's, when there is one)."""
    tokenizer: str
    """The tokenizer spec."""
    val_fraction: float
    """The share of the corpus held out for validation; 0 with a separate validation corpus."""
    vocab_size: int
    dtype: str
    """``uint16`` or ``uint32``: the token id type of both shards."""
    documents: int
    """``<|endoftext|>`` separators written: documents, counting each part of a document cut by the split."""
    train: SplitStats
    val: SplitStats
    val_source: str | None = None
    """The separate validation corpus spec, if any."""
    format_version: int = FORMAT_VERSION

    def split(self, name: str) -> SplitStats:
        """The stats of split `name` (``train`` or ``val``)."""
        return {"train": self.train, "val": self.val}[name]

    def to_json(self) -> dict[str, Any]:
        """The flat JSON object of ``meta.json`` (also stored as the ``data`` of every checkpoint)."""
        return {
            "source": self.source,
            **({"val_source": self.val_source} if self.val_source is not None else {}),
            "fingerprint": self.fingerprint,
            "tokenizer": self.tokenizer,
            "val_fraction": self.val_fraction,
            "vocab_size": self.vocab_size,
            "dtype": self.dtype,
            "format_version": self.format_version,
            "documents": self.documents,
            **{f"{name}_tokens": self.split(name).tokens for name in SPLITS},
            **{f"{name}_bytes": self.split(name).n_bytes for name in SPLITS},
            **{f"{name}_sha256": self.split(name).sha256 for name in SPLITS},
        }

    @classmethod
    def from_json(cls, data: Any) -> ShardMeta:
        """The record `to_json` wrote (as every minigpt since format 2 did); a ValueError says what is wrong with
        `data` as a predicate (``has no int vocab_size``)."""
        if not isinstance(data, dict):
            raise ValueError("is not a JSON object")
        for key, kind in _JSON_TYPES.items():
            if type(data.get(key)) is not kind:
                raise ValueError(f"has no {kind.__name__} {key}")
        if data["dtype"] not in LITTLE_ENDIAN:
            raise ValueError(f"has an unknown dtype {data['dtype']!r}")
        if data["format_version"] != FORMAT_VERSION:
            raise ValueError(f"has format version {data['format_version']}, not {FORMAT_VERSION}")
        splits = {
            name: SplitStats(data[f"{name}_tokens"], data[f"{name}_bytes"], data[f"{name}_sha256"]) for name in SPLITS
        }
        val_source = data.get("val_source")
        return cls(
            **{key: data[key] for key in _FIELD_TYPES}, **splits,
            val_source=val_source if isinstance(val_source, str) else None,
        )  # fmt: skip


_FIELD_TYPES = {
    "source": str,
    "fingerprint": str,
    "tokenizer": str,
    "val_fraction": float,
    "vocab_size": int,
    "dtype": str,
    "documents": int,
    "format_version": int,
}
_JSON_TYPES = {
    **_FIELD_TYPES,
    **{f"{split}_{field}": int for split in SPLITS for field in ("tokens", "bytes")},
    **{f"{split}_sha256": str for split in SPLITS},
}


@dataclass
class Prepared:
    """A shard folder ready for training; `reused` is True when it came from the cache untouched."""

    dir: Path
    meta: ShardMeta
    tokenizer: tiktoken.Encoding
    reused: bool = False


class Unusable(Exception):
    """Why a shard folder cannot be used: the message is the first problem found."""


def shard_dtype(n_vocab: int) -> str:
    """The smallest unsigned integer type that holds every token id: ``uint16`` up to 65536 ids, else ``uint32``."""
    return "uint16" if n_vocab <= 1 << 16 else "uint32"


def load(shard_dir: Path) -> Prepared:
    """Open a shard folder written by `minigpt.data.prepare` after checking it is whole (no tokenizing, no network)."""
    try:
        return verified(Path(shard_dir))
    except Unusable as problem:
        raise MiniGPTError(f"{shard_dir} is not a prepared shard folder ({problem}): prepare the data again") from None


def write(folder: Path, meta: ShardMeta) -> None:
    """Write ``meta.json`` into `folder`, beside the shards and tokenizer it describes."""
    (folder / META_FILE).write_text(json.dumps(meta.to_json(), indent=2) + "\n")


def verified(folder: Path, expected: dict[str, Any] | None = None) -> Prepared:
    """The folder's meta and tokenizer, once its meta (with the `expected` values of its fields), shard sizes,
    checksums and vocabulary agree; else `Unusable`."""
    meta = _read_meta(folder / META_FILE)
    for key, value in (expected or {}).items():
        if getattr(meta, key) != value:
            raise Unusable(f"{META_FILE} has {key} {getattr(meta, key)!r}, not {value!r}")
    itemsize = np.dtype(meta.dtype).itemsize
    for split in SPLITS:
        path, stats = folder / f"{split}.bin", meta.split(split)
        try:
            size = path.stat().st_size
            if size != stats.tokens * itemsize:
                raise Unusable(f"{path.name} has {size} bytes, not {stats.tokens} tokens of {itemsize} bytes")
            if _file_sha256(path) != stats.sha256:
                raise Unusable(f"{path.name} does not match its checksum")
        except OSError as exc:
            raise Unusable(f"{path.name}: {_describe(exc)}") from None
    try:
        enc = tok.load(folder / TOKENIZER_FILE)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # missing, or a damaged record of any shape
        raise Unusable(f"{TOKENIZER_FILE} does not load: {_describe(exc)}") from None
    if enc.n_vocab != meta.vocab_size:
        raise Unusable(f"{TOKENIZER_FILE} has {enc.n_vocab} tokens, {META_FILE} says {meta.vocab_size}")
    return Prepared(folder, meta, enc)


def _read_meta(path: Path) -> ShardMeta:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # missing, unreadable, not UTF-8 or not JSON
        raise Unusable(f"{path.name}: {_describe(exc)}") from None
    try:
        return ShardMeta.from_json(data)
    except ValueError as problem:
        raise Unusable(f"{path.name} {problem}") from None


def _describe(exc: Exception) -> str:
    """An OS error's own words, else the exception's type and message."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
