"""Tokenize a corpus once into cached token shards that training reads with `numpy.memmap`.

A shard folder is ``<cache_dir>/<key>``, the key hashing (format version, corpus fingerprint, tokenizer spec,
val_fraction), and holds:

- ``train.bin`` / ``val.bin``: raw little-endian token ids, ``uint16`` when the vocabulary fits in 65536 ids,
  else ``uint32``; read them with ``numpy.memmap(path, dtype=meta["dtype"], mode="r")``.
- ``tokenizer.json``: `minigpt.tokenizer.to_dict` with base64 ranks, so reusing the folder needs neither BPE
  training nor the network.
- ``meta.json``: source, fingerprint, tokenizer, vocab_size, dtype, val_fraction, format_version, documents,
  train_tokens, val_tokens, train_bytes, val_bytes (UTF-8 bytes of each split's text, without separators, for
  bits per byte).

Split: when the corpus has at least max(10, k) documents (k = round(1 / val_fraction)), every k-th document goes
to validation; otherwise the last val_fraction of the characters does (nanoGPT's split of a single text), which
may cut one document in two. Every document, and each part of a cut one, is preceded by one ``<|endoftext|>``,
the token that also starts an empty prompt when sampling; ``documents`` counts these separators.

A folder is built under a temporary sibling name and renamed when complete, so an interrupted run never leaves
an entry that looks valid.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
from tqdm import tqdm

from minigpt import tokenizer as tok
from minigpt.corpus import default_cache_dir, open_corpus
from minigpt.errors import MiniGPTError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MIN_DOCS_FOR_DOC_SPLIT = 10
TOKENIZER_FILE = "tokenizer.json"
CHUNK_CHARS = 1 << 18  # a long document is tokenized in pieces of about this size ...
BATCH_CHARS = 1 << 22  # ... and this much text goes to the tokenizer threads at once

# A cut right after a newline between two non-space characters never changes the tokens: the pre-tokenizer
# patterns of all our encodings (GPT-2, cl100k, rustbpe's) end a piece at such a newline either way.
_SAFE_CUT = re.compile(r"\S\n(?=\S)")
_LITTLE_ENDIAN = {"uint16": "<u2", "uint32": "<u4"}


@dataclass
class Prepared:
    """A shard folder ready for training; `reused` is True when it came from the cache untouched."""

    dir: Path
    meta: dict[str, Any]
    tokenizer: tiktoken.Encoding
    reused: bool = False


def prepare(
    data_spec: str, tokenizer_spec: str, cache_dir: Path | None = None, val_fraction: float = 0.1
) -> Prepared:
    """Tokenize the corpus `data_spec` with `tokenizer_spec` into shards, or reuse the cached ones."""
    if not 0 < val_fraction <= 0.5:
        raise MiniGPTError(f"val_fraction {val_fraction} is out of range: use a fraction above 0 and at most 0.5")
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    corpus = open_corpus(data_spec, cache_dir)
    fingerprint = corpus.fingerprint()
    target = cache_dir / _cache_key(fingerprint, tokenizer_spec, val_fraction)
    if (target / "meta.json").is_file():
        logger.info("reusing the prepared shards of %s (%s) in %s", data_spec, tokenizer_spec, target)
        return dataclasses.replace(load(target), reused=True)
    logger.info("tokenizing %s with %s into %s", data_spec, tokenizer_spec, target)
    with _build_dir(target) as tmp:
        enc = _build_tokenizer(tokenizer_spec, corpus.documents(), val_fraction)
        _save_tokenizer(enc, tmp / TOKENIZER_FILE)
        dtype = shard_dtype(enc.n_vocab)
        counts = _write_shards(enc, _split(corpus.documents(), val_fraction), tmp, dtype)
        if not counts["train_tokens"] or not counts["val_tokens"]:
            raise MiniGPTError(
                f"corpus '{data_spec}' is too small to split into training and validation text: add more text"
            )
        meta = {
            "source": data_spec,
            "fingerprint": fingerprint,
            "tokenizer": tokenizer_spec,
            "vocab_size": enc.n_vocab,
            "dtype": dtype,
            "val_fraction": val_fraction,
            "format_version": FORMAT_VERSION,
            **counts,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    logger.info("wrote %d training and %d validation tokens", meta["train_tokens"], meta["val_tokens"])
    return load(target)


def load(shard_dir: Path) -> Prepared:
    """Open a shard folder written by `prepare`: its meta and tokenizer (no tokenizing, no network)."""
    meta_path = Path(shard_dir) / "meta.json"
    if not meta_path.is_file():
        raise MiniGPTError(f"{shard_dir} is not a prepared shard folder (no meta.json): prepare the data first")
    meta = json.loads(meta_path.read_text())
    return Prepared(meta_path.parent, meta, _load_tokenizer(meta_path.parent / TOKENIZER_FILE))


def shard_dtype(n_vocab: int) -> str:
    """The smallest unsigned integer type that holds every token id: ``uint16`` up to 65536 ids, else ``uint32``."""
    return "uint16" if n_vocab <= 1 << 16 else "uint32"


def _cache_key(fingerprint: str, tokenizer_spec: str, val_fraction: float) -> str:
    key = json.dumps([FORMAT_VERSION, fingerprint, tokenizer_spec, val_fraction])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@contextmanager
def _build_dir(target: Path) -> Iterator[Path]:
    """A temporary sibling of `target` that becomes `target` only if the block finishes without an error."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the finished shards are ordinary readable files
    try:
        yield tmp
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished the same shards first; they are identical, so keep theirs.
            if not (target / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_tokenizer(spec: str, documents: Iterable[str], val_fraction: float) -> tiktoken.Encoding:
    """Build the tokenizer; a BPE is trained on the training split only, so validation text stays unseen."""
    if not tok.needs_training(spec):
        return tok.build_tokenizer(spec)
    training = (text for split, text in _split(documents, val_fraction) if split == "train")
    return tok.build_tokenizer(spec, training)


def _split(documents: Iterable[str], val_fraction: float) -> Iterator[tuple[str, str]]:
    """Label each document ``train`` or ``val`` (see the module docstring); the same input gives the same labels."""
    k = round(1 / val_fraction)
    documents = iter(documents)
    head = list(itertools.islice(documents, max(MIN_DOCS_FOR_DOC_SPLIT, k)))
    if len(head) < max(MIN_DOCS_FOR_DOC_SPLIT, k):
        yield from _tail_split(head, val_fraction)
        return
    for index, text in enumerate(itertools.chain(head, documents)):
        yield ("val" if index % k == k - 1 else "train"), text


def _tail_split(documents: list[str], val_fraction: float) -> Iterator[tuple[str, str]]:
    """The first (1 - val_fraction) of the characters are training text, the rest validation."""
    cut = int(sum(map(len, documents)) * (1 - val_fraction))
    for text in documents:
        if cut >= len(text):
            yield "train", text
        elif cut <= 0:
            yield "val", text
        else:
            yield "train", text[:cut]
            yield "val", text[cut:]
        cut -= len(text)


def _write_shards(enc: tiktoken.Encoding, pieces: Iterable[tuple[str, str]], out: Path, dtype: str) -> dict[str, int]:
    """Tokenize labelled text in parallel batches, appending ids to ``train.bin``/``val.bin``; return the counts."""
    eot = tok.eot_id(enc)
    counts = dict.fromkeys(("documents", "train_tokens", "val_tokens", "train_bytes", "val_bytes"), 0)
    threads = os.cpu_count() or 1
    with (
        (out / "train.bin").open("wb") as train,
        (out / "val.bin").open("wb") as val,
        tqdm(desc="tokenizing", unit="B", unit_scale=True, disable=None) as progress,
    ):
        files = {"train": train, "val": val}
        for batch in _batches(_chunks(pieces), BATCH_CHARS):
            ids: dict[str, list[int]] = {"train": [], "val": []}
            encoded = tok.encode_batch(enc, [text for _, text, _ in batch], threads)
            for (split, text, starts_document), tokens in zip(batch, encoded):
                if starts_document:
                    ids[split].append(eot)
                    counts["documents"] += 1
                ids[split].extend(tokens)
                size = len(text.encode())
                counts[f"{split}_bytes"] += size
                progress.update(size)
            for split, split_ids in ids.items():
                np.asarray(split_ids, dtype=_LITTLE_ENDIAN[dtype]).tofile(files[split])
                counts[f"{split}_tokens"] += len(split_ids)
    return counts


def _chunks(pieces: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str, bool]]:
    """(split, text chunk, whether it starts a document): long texts cut where tokens cannot change."""
    for split, text in pieces:
        for index, chunk in enumerate(_cut_at_lines(text, CHUNK_CHARS)):
            yield split, chunk, index == 0


def _cut_at_lines(text: str, size: int) -> Iterator[str]:
    """Pieces of at least `size` characters (but the last), each ending at a safe newline; none in text: one piece."""
    start = 0
    while len(text) - start > size and (match := _SAFE_CUT.search(text, start + size)):
        yield text[start : match.end()]
        start = match.end()
    yield text[start:]


def _batches(items: Iterable[tuple[str, str, bool]], max_chars: int) -> Iterator[list[tuple[str, str, bool]]]:
    batch: list[tuple[str, str, bool]] = []
    chars = 0
    for item in items:
        batch.append(item)
        chars += len(item[1])
        if chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _save_tokenizer(enc: tiktoken.Encoding, path: Path) -> None:
    data = tok.to_dict(enc)
    data["ranks"] = [base64.b64encode(token).decode("ascii") for token in data["ranks"]]
    path.write_text(json.dumps(data))


def _load_tokenizer(path: Path) -> tiktoken.Encoding:
    data = json.loads(path.read_text())
    data["ranks"] = [base64.b64decode(token) for token in data["ranks"]]
    return tok.from_dict(data)
