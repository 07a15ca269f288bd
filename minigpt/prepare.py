"""Tokenize a corpus once into cached token shards that training reads with `numpy.memmap`.

A shard folder is ``<cache_dir>/<key>``, the key hashing (format version, corpus fingerprint, tokenizer spec,
val_fraction), and holds:

- ``train.bin`` / ``val.bin``: raw little-endian token ids, ``uint16`` when the vocabulary fits in 65536 ids,
  else ``uint32``; read them with ``numpy.memmap(path, dtype=meta["dtype"], mode="r")``.
- ``tokenizer.json``: `minigpt.tokenizer.to_dict` with base64 ranks, so reusing the folder needs neither BPE
  training nor the network.
- ``meta.json``: source, fingerprint, tokenizer, vocab_size, dtype, val_fraction, format_version, documents,
  train_tokens, val_tokens, train_bytes, val_bytes (UTF-8 bytes of each split's text, without separators, for
  bits per byte), train_sha256, val_sha256 (hex SHA-256 of each shard, computed while writing it).

Split: when the corpus has at least max(10, k) documents (k = round(1 / val_fraction)), every k-th document goes
to validation; otherwise the last val_fraction of the characters does (nanoGPT's split of a single text), which
may cut one document in two. With a separate validation corpus (``val_spec``), all of the corpus is training
text and all of that one validation text. Every document, and each part of a cut one, is preceded by one ``<|endoftext|>``,
the token that also starts an empty prompt when sampling; ``documents`` counts these separators.

A folder is built under a temporary sibling ``.<key>.<host>.<pid>.<random>.tmp`` and renamed when complete, so an
interrupted run never leaves an entry that looks valid. A run killed before it could clean up (``kill -9``) leaves
its temporary folder behind; every later `prepare` removes such folders whose process no longer runs on this host.

A cached folder is trusted only after checking it: meta.json parses with every key of the right type and matches
the key's inputs, each shard's size is its token count times the item size and its SHA-256 matches, and the
tokenizer loads with the recorded vocabulary size. A folder that fails is rebuilt and replaced, with one warning.
Reusing a valid folder writes nothing, so a read-only cache works for shards that are already there.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import hashlib
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
from tqdm import tqdm

from minigpt import tokenizer as tok
from minigpt.corpus import cache_dir_error, default_cache_dir, open_corpus
from minigpt.errors import MiniGPTError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
MIN_DOCS_FOR_DOC_SPLIT = 10
MIN_VAL_FRACTION, MAX_VAL_FRACTION = 1e-6, 0.5  # below the minimum, 1 / val_fraction stops being a usable stride
TOKENIZER_FILE = "tokenizer.json"
SPLITS = ("train", "val")
CHUNK_CHARS = 1 << 18  # a long document is tokenized in pieces of about this size ...
BATCH_CHARS = 1 << 22  # ... and this much text goes to the tokenizer threads at once
_HASH_CHUNK = 1 << 20

# A cut right after a newline between two non-space characters never changes the tokens: the pre-tokenizer
# patterns of all our encodings (GPT-2, cl100k, rustbpe's) end a piece at such a newline either way.
_SAFE_CUT = re.compile(r"\S\n(?=\S)")
_LITTLE_ENDIAN = {"uint16": "<u2", "uint32": "<u4"}
_META_TYPES = {
    "source": str,
    "fingerprint": str,
    "tokenizer": str,
    "vocab_size": int,
    "dtype": str,
    "val_fraction": float,
    "format_version": int,
    "documents": int,
    **{f"{split}_{field}": int for split in SPLITS for field in ("tokens", "bytes")},
    **{f"{split}_sha256": str for split in SPLITS},
}
# ``.<key>.<host>.<pid>.<random>.tmp``: the host part has no dots (see `_host`), so the name splits unambiguously.
_TEMP_NAME = re.compile(r"\.[0-9a-f]{16}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]{1,9})\.[0-9a-f]{8}\.tmp")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass
class Prepared:
    """A shard folder ready for training; `reused` is True when it came from the cache untouched."""

    dir: Path
    meta: dict[str, Any]
    tokenizer: tiktoken.Encoding
    reused: bool = False


class _Unusable(Exception):
    """Why a shard folder cannot be used: the message is the first problem found."""


def prepare(
    data_spec: str,
    tokenizer_spec: str,
    cache_dir: Path | None = None,
    val_fraction: float = 0.1,
    progress: bool = True,
    val_spec: str | None = None,
    tokenizer: tiktoken.Encoding | None = None,
) -> Prepared:
    """Tokenize the corpus `data_spec` with `tokenizer_spec` into shards, or reuse the cached ones if they check out.

    With `val_spec`, all of `data_spec` is training text and all of `val_spec` validation text (recorded as
    val_fraction 0 and val_source); otherwise `val_fraction` of `data_spec` is held out. A given `tokenizer`
    (a pretrained model's) is used as it is, `tokenizer_spec` then only naming it in the cache key and meta.
    `progress` False hides the progress bar (shown on terminals only), for all but one process of a run."""
    if val_spec is None and not MIN_VAL_FRACTION <= val_fraction <= MAX_VAL_FRACTION:
        raise MiniGPTError(
            f"val_fraction {val_fraction} is out of range: use a fraction from {MIN_VAL_FRACTION:g} to {MAX_VAL_FRACTION:g}"
        )
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    corpus = open_corpus(data_spec, cache_dir)
    held_out = open_corpus(val_spec, cache_dir) if val_spec is not None else None
    fingerprint = corpus.fingerprint() + ("" if held_out is None else "+" + held_out.fingerprint())
    if held_out is not None:
        val_fraction = 0.0

    def pieces() -> Iterator[tuple[str, str]]:
        if held_out is None:
            return split_documents(corpus.documents(), val_fraction)
        return itertools.chain((("train", t) for t in corpus.documents()), (("val", t) for t in held_out.documents()))

    expected = {"fingerprint": fingerprint, "tokenizer": tokenizer_spec, "val_fraction": val_fraction}
    target = cache_dir / _cache_key(fingerprint, tokenizer_spec, val_fraction)
    _sweep_dead_builds(cache_dir)
    if os.path.lexists(target):
        try:
            prepared = _verified(target, expected)
        except _Unusable as problem:
            logger.warning("the cached shards in %s are damaged (%s): rebuilding them", target, problem)
        else:
            logger.info("reusing the prepared shards of %s (%s) in %s", data_spec, tokenizer_spec, target)
            return dataclasses.replace(prepared, reused=True)
    tmp = _new_build_dir(target)
    logger.info("tokenizing %s with %s into %s", data_spec, tokenizer_spec, target)
    try:
        enc = tokenizer or _build_tokenizer(tokenizer_spec, (text for split, text in pieces() if split == "train"))
        _save_tokenizer(enc, tmp / TOKENIZER_FILE)
        dtype = shard_dtype(enc.n_vocab)
        sizes = [c.size_hint() for c in (corpus, held_out) if c is not None]
        total = None if None in sizes else sum(sizes)
        written = _write_shards(enc, pieces(), tmp, dtype, progress, total)
        if not written["train_tokens"] or not written["val_tokens"]:
            raise MiniGPTError(
                f"corpus '{data_spec}' is too small to split into training and validation text: add more text"
            )
        meta = {
            "source": data_spec,
            **({"val_source": val_spec} if val_spec is not None else {}),
            **expected,
            "vocab_size": enc.n_vocab,
            "dtype": dtype,
            "format_version": FORMAT_VERSION,
            **written,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        logger.info("wrote %d training and %d validation tokens", meta["train_tokens"], meta["val_tokens"])
        return _publish(tmp, Prepared(target, meta, enc), expected)
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        raise MiniGPTError(
            f"no space left on device while writing shards to {cache_dir}: free some space, or pass --cache_dir "
            "(or set MINIGPT_CACHE) to a folder on a disk with room"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(shard_dir: Path) -> Prepared:
    """Open a shard folder written by `prepare` after checking it is whole (no tokenizing, no network)."""
    try:
        return _verified(Path(shard_dir))
    except _Unusable as problem:
        raise MiniGPTError(f"{shard_dir} is not a prepared shard folder ({problem}): prepare the data again") from None


def shard_dtype(n_vocab: int) -> str:
    """The smallest unsigned integer type that holds every token id: ``uint16`` up to 65536 ids, else ``uint32``."""
    return "uint16" if n_vocab <= 1 << 16 else "uint32"


def _cache_key(fingerprint: str, tokenizer_spec: str, val_fraction: float) -> str:
    key = json.dumps([FORMAT_VERSION, fingerprint, tokenizer_spec, val_fraction])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _verified(folder: Path, expected: dict[str, Any] | None = None) -> Prepared:
    """The folder's meta and tokenizer, once its meta, shard sizes, checksums and vocabulary agree; else `_Unusable`."""
    meta = _read_meta(folder / "meta.json")
    for key, value in (expected or {}).items():
        if meta[key] != value:
            raise _Unusable(f"meta.json has {key} {meta[key]!r}, not {value!r}")
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split in SPLITS:
        path = folder / f"{split}.bin"
        tokens = meta[f"{split}_tokens"]
        try:
            size = path.stat().st_size
            if size != tokens * itemsize:
                raise _Unusable(f"{path.name} has {size} bytes, not {tokens} tokens of {itemsize} bytes")
            if _file_sha256(path) != meta[f"{split}_sha256"]:
                raise _Unusable(f"{path.name} does not match its checksum")
        except OSError as exc:
            raise _Unusable(f"{path.name}: {_describe(exc)}") from None
    try:
        enc = _load_tokenizer(folder / TOKENIZER_FILE)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # missing, or a damaged record of any shape
        raise _Unusable(f"{TOKENIZER_FILE} does not load: {_describe(exc)}") from None
    if enc.n_vocab != meta["vocab_size"]:
        raise _Unusable(f"{TOKENIZER_FILE} has {enc.n_vocab} tokens, meta.json says {meta['vocab_size']}")
    return Prepared(folder, meta, enc)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # missing, unreadable, not UTF-8 or not JSON
        raise _Unusable(f"{path.name}: {_describe(exc)}") from None
    if not isinstance(meta, dict):
        raise _Unusable(f"{path.name} is not a JSON object")
    for key, kind in _META_TYPES.items():
        if type(meta.get(key)) is not kind:
            raise _Unusable(f"{path.name} has no {kind.__name__} {key}")
    if meta["dtype"] not in _LITTLE_ENDIAN:
        raise _Unusable(f"{path.name} has an unknown dtype {meta['dtype']!r}")
    if meta["format_version"] != FORMAT_VERSION:
        raise _Unusable(f"{path.name} has format version {meta['format_version']}, not {FORMAT_VERSION}")
    return meta


def _describe(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _new_build_dir(target: Path) -> Path:
    """Create the temporary sibling that `target` is built in, named for this process (see `_sweep_dead_builds`)."""
    tmp = _owned_sibling(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise cache_dir_error(target.parent, exc) from None
    return tmp


def _publish(tmp: Path, built: Prepared, expected: dict[str, Any]) -> Prepared:
    """Rename `tmp` to ``built.dir``; a valid folder another process put there first wins, a bad one is replaced."""
    target = built.dir
    while True:
        try:
            tmp.rename(target)
            return built
        except OSError:
            if not os.path.lexists(target):
                raise
        try:
            return _verified(target, expected)
        except _Unusable:
            _discard(target)


def _discard(path: Path) -> None:
    """Delete `path`, first renamed to a name this process owns, so a crash halfway leaves only sweepable litter."""
    trash = _owned_sibling(path)
    try:
        path.rename(trash)
    except FileNotFoundError:  # another process discarded it first
        return
    _remove(trash)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _owned_sibling(path: Path) -> Path:
    """A fresh name beside `path` that tells which process owns it: ``.<name>.<host>.<pid>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _host() -> str:
    """Where this process's pid means something: the host name, plus the pid namespace where Linux has one."""
    host = socket.gethostname()
    with contextlib.suppress(OSError):  # containers can share a host name but not their pids
        host += f"-{os.stat('/proc/self/ns/pid').st_ino}"
    # Only letters, digits and dashes, so the temporary names split at their dots unambiguously.
    return re.sub(r"[^A-Za-z0-9-]", "-", host)


def _sweep_dead_builds(cache_dir: Path) -> None:
    """Remove the temporary folders whose process died on this host without cleaning up (``kill -9``, power loss)."""
    if os.name != "posix":  # the liveness check needs POSIX signal 0; on Windows os.kill would end the process
        return
    try:
        names = os.listdir(cache_dir)
    except OSError:  # no cache folder yet, or not a folder at all, which building then reports
        return
    host = _host()
    for name in names:
        match = _TEMP_NAME.fullmatch(name)
        # A pid says nothing about another host's processes (a cache on a shared disk), so only ours are judged.
        if match is None or match["host"] != host or _alive(int(match["pid"])):
            continue
        try:
            _remove(cache_dir / name)
        except OSError:  # a read-only cache, or another process sweeping the same folder
            continue
        logger.info("removed %s, left behind by process %s, which no longer runs", cache_dir / name, match["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to another user
        return True
    return True


def _build_tokenizer(spec: str, training_text: Iterable[str]) -> tiktoken.Encoding:
    """Build the tokenizer; a BPE is trained on the training text only, so validation text stays unseen."""
    if not tok.needs_training(spec):
        return tok.build_tokenizer(spec)
    return tok.build_tokenizer(spec, training_text)


def split_documents(documents: Iterable[str], val_fraction: float) -> Iterator[tuple[str, str]]:
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


def _write_shards(
    enc: tiktoken.Encoding, pieces: Iterable[tuple[str, str]], out: Path, dtype: str, progress: bool,
    total_bytes: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Tokenize labelled text in parallel batches, appending ids to ``train.bin``/``val.bin``; the progress bar
    counts bytes of text, out of `total_bytes` (with an ETA) when that is known.

    Returns the meta entries they fill: documents, ``{split}_tokens``, ``{split}_bytes`` and ``{split}_sha256``.
    """
    little_endian = _LITTLE_ENDIAN[dtype]
    separator = np.array([tok.eot_id(enc)], dtype=little_endian)
    counts = dict.fromkeys(("documents", "train_tokens", "val_tokens", "train_bytes", "val_bytes"), 0)
    digests = {split: hashlib.sha256() for split in SPLITS}
    encode = _array_encoder(enc, little_endian)
    with (
        (out / "train.bin").open("wb") as train,
        (out / "val.bin").open("wb") as val,
        tqdm(desc="tokenizing", total=total_bytes, unit="B", unit_scale=True, disable=None if progress else True) as bar,
    ):
        files = {"train": train, "val": val}
        for batch in _batches(_chunks(pieces), BATCH_CHARS):
            parts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
            for (split, text, starts_document), tokens in zip(batch, encode([text for _, text, _ in batch])):
                if starts_document:
                    parts[split].append(separator)
                    counts["documents"] += 1
                parts[split].append(tokens)
                size = len(text.encode())
                counts[f"{split}_bytes"] += size
                bar.update(size)
            for split, arrays in parts.items():
                array = np.concatenate(arrays) if arrays else separator[:0]
                digests[split].update(array)
                array.tofile(files[split])
                counts[f"{split}_tokens"] += len(array)
    return {**counts, **{f"{split}_sha256": digest.hexdigest() for split, digest in digests.items()}}


def _array_encoder(enc: tiktoken.Encoding, dtype: str) -> Callable[[list[str]], list[np.ndarray]]:
    """A function from texts to their token arrays. Byte tokens are the UTF-8 bytes themselves, so the `bytes`
    tokenizer needs no tokenizing at all (numpy reads them directly, at memory speed); others run on every core."""
    if tok.is_byte_tokenizer(enc):
        return lambda texts: [np.frombuffer(text.encode(), dtype=np.uint8).astype(dtype) for text in texts]
    threads = os.cpu_count() or 1
    return lambda texts: [np.asarray(ids, dtype=dtype) for ids in tok.encode_batch(enc, texts, threads)]


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
