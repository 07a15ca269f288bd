"""Tokenize a corpus once into cached token shards that training reads with `numpy.memmap`.

The shards go to ``<cache_dir>/<key>`` (see `minigpt.data.cache`), the key hashing (format version, corpus
fingerprint, tokenizer spec, val_fraction); what the folder holds is described in `minigpt.data.shards`.

Split: when the corpus has at least max(10, k) documents (k = round(1 / val_fraction)), every k-th document goes
to validation; otherwise the last val_fraction of the characters does (nanoGPT's split of a single text), which
may cut one document in two. With a separate validation corpus (``val_spec``), all of the corpus is training
text and all of that one validation text. Every document, and each part of a cut one, is preceded by one ``<|endoftext|>``,
the token that also starts an empty prompt when sampling; ``documents`` counts these separators.

A cached folder is used only once `minigpt.data.shards.verified` accepts it and its meta matches the key's inputs; a
folder that fails is rebuilt and replaced, with one warning. Reusing a valid folder writes nothing, so a
read-only cache works for shards that are already there.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import itertools
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import tiktoken
from tqdm import tqdm

from minigpt import tokenizer as tok
from minigpt.data import shards
from minigpt.data.cache import cache_key, default_cache_dir, new_build_dir, publish, sweep_dead_builds
from minigpt.data.corpus import open_corpus
from minigpt.data.shards import LITTLE_ENDIAN, SPLITS, Prepared, ShardMeta, SplitStats, Unusable, shard_dtype
from minigpt.errors import MiniGPTError

logger = logging.getLogger(__name__)

MIN_DOCS_FOR_DOC_SPLIT = 10
MIN_VAL_FRACTION, MAX_VAL_FRACTION = 1e-6, 0.5  # below the minimum, 1 / val_fraction stops being a usable stride
DEFAULT_VAL_FRACTION = 0.1
"""The share of a corpus held out for validation unless a run says otherwise; also the split assumed for a
checkpoint that does not record its own."""
CHUNK_CHARS = 1 << 18  # a long document is tokenized in pieces of about this size ...
BATCH_CHARS = 1 << 22  # ... and this much text goes to the tokenizer threads at once
BPE_SAMPLE_CHARS = 32 << 20  # bpe:N learns its merges from at most this much training text, spread over all of it

# A cut right after a newline between two non-space characters never changes the tokens: the pre-tokenizer
# patterns of all our encodings (GPT-2, cl100k, rustbpe's) end a piece at such a newline either way.
_SAFE_CUT = re.compile(r"\S\n(?=\S)")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def check_val_fraction(value: float, name: str = "val_fraction") -> None:
    """The one rule for a held-out share of a corpus, for training and evaluation alike: a one-line error
    naming `name` unless it is a fraction from MIN_VAL_FRACTION to MAX_VAL_FRACTION."""
    if not MIN_VAL_FRACTION <= value <= MAX_VAL_FRACTION:
        raise MiniGPTError(
            f"{name} {value} is out of range: use a fraction from {MIN_VAL_FRACTION:g} to {MAX_VAL_FRACTION:g}"
        )


def prepare(
    data_spec: str,
    tokenizer_spec: str,
    cache_dir: Path | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    progress: bool = True,
    val_spec: str | None = None,
    tokenizer: tiktoken.Encoding | None = None,
) -> Prepared:
    """Tokenize the corpus `data_spec` with `tokenizer_spec` into shards, or reuse the cached ones if they check out.

    With `val_spec`, all of `data_spec` is training text and all of `val_spec` validation text (recorded as
    val_fraction 0 and val_source); otherwise `val_fraction` of `data_spec` is held out. A given `tokenizer`
    (a pretrained model's) is used as it is, `tokenizer_spec` then only naming it in the cache key and meta.
    `progress` False hides the progress bar (shown on terminals only), for all but one process of a run."""
    if val_spec is None:
        check_val_fraction(val_fraction)
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
    target = cache_dir / cache_key(fingerprint, tokenizer_spec, val_fraction)
    sweep_dead_builds(cache_dir)
    if os.path.lexists(target):
        try:
            prepared = shards.verified(target, expected)
        except Unusable as problem:
            logger.warning("the cached shards in %s are damaged (%s): rebuilding them", target, problem)
        else:
            logger.info("reusing the prepared shards of %s (%s) in %s", data_spec, tokenizer_spec, target)
            return dataclasses.replace(prepared, reused=True)
    tmp = new_build_dir(target)
    logger.info("tokenizing %s with %s into %s", data_spec, tokenizer_spec, target)
    try:
        sizes = [c.size_hint() for c in (corpus, held_out) if c is not None]
        total = None if None in sizes else sum(sizes)
        training_text = (text for split, text in pieces() if split == "train")
        enc = tokenizer or _build_tokenizer(tokenizer_spec, spread_sample(training_text, BPE_SAMPLE_CHARS, total))
        tok.save(enc, tmp / shards.TOKENIZER_FILE)
        dtype = shard_dtype(enc.n_vocab)
        documents, written = _write_shards(enc, pieces(), tmp, dtype, progress, total)
        if not written["train"].tokens or not written["val"].tokens:
            raise MiniGPTError(
                f"corpus '{data_spec}' is too small to split into training and validation text: add more text"
            )
        meta = ShardMeta(
            source=data_spec, fingerprint=fingerprint, tokenizer=tokenizer_spec, val_fraction=val_fraction,
            vocab_size=enc.n_vocab, dtype=dtype, documents=documents, **written, val_source=val_spec,
        )  # fmt: skip
        shards.write(tmp, meta)
        logger.info("wrote %d training and %d validation tokens", meta.train.tokens, meta.val.tokens)
        return publish(tmp, Prepared(target, meta, enc), expected)
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        raise MiniGPTError(
            f"no space left on device while writing shards to {cache_dir}: free some space, or pass --cache_dir "
            "(or set MINIGPT_CACHE) to a folder on a disk with room"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_tokenizer(spec: str, training_text: Iterable[str]) -> tiktoken.Encoding:
    """Build the tokenizer; a BPE is trained on the training text only, so validation text stays unseen."""
    if not tok.needs_training(spec):
        return tok.build_tokenizer(spec)
    return tok.build_tokenizer(spec, training_text)


def spread_sample(texts: Iterable[str], budget: int, total: int | None) -> Iterator[str]:
    """About `budget` characters of `texts`, in pieces cut at safe newlines and spread evenly over all of them
    (`total`, their size in bytes, tells how thinly); all of them when they are smaller, the first `budget`
    characters when `total` is unknown. Counting the pairs of all of a 200 MB corpus took 10.6 s of its 22.7 s
    of preparation; pieces from everywhere keep what the vocabulary learns representative of the whole."""
    kept = seen = 0
    for text in texts:
        for piece in _cut_at_lines(text, CHUNK_CHARS):
            seen += len(piece)
            # Keep a piece while the kept share is below budget / total at this point of the stream.
            if kept < budget and (total is None or total <= budget or kept * total < budget * seen):
                kept += len(piece)
                yield piece


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
) -> tuple[int, dict[str, SplitStats]]:  # fmt: skip
    """Tokenize labelled text in parallel batches, appending ids to ``train.bin``/``val.bin``; the progress bar
    counts bytes of text, out of `total_bytes` (with an ETA) when that is known.

    Returns the number of documents (separators written) and each split's stats.
    """
    little_endian = LITTLE_ENDIAN[dtype]
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
    stats = {
        split: SplitStats(counts[f"{split}_tokens"], counts[f"{split}_bytes"], digests[split].hexdigest()) for split in SPLITS
    }
    return counts["documents"], stats


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
