"""Tokenize a corpus once into cached token shards that training reads with `numpy.memmap`.

The shards go to ``<cache_dir>/<key>`` (see `minigpt.data.cache`), the key hashing (format version, corpus
fingerprint, tokenizer spec, val_fraction); what the folder holds is described in `minigpt.data.shards`.

Split: every k-th document (k = round(1 / val_fraction)) goes to validation, or, with fewer documents, the last
val_fraction of the characters (see `minigpt.data.pieces`). With a separate validation corpus (``val_spec``), all
of the corpus is training text and all of that one validation text. Every document, and each part of a cut one, is preceded by one ``<|endoftext|>``,
the token that also starts an empty prompt when sampling; ``documents`` counts these separators.

Documents are streamed in pieces (`minigpt.data.pieces`), so memory does not grow with the corpus or its largest
file. Every piece's tokens must give back its bytes (checked by length for all, in full for a sample): a
tokenizer whose split pattern skips characters fails here, in one line, instead of dropping text silently.

A cached folder is used only once `minigpt.data.shards.verified` accepts it and its meta matches the key's inputs; a
folder that fails is rebuilt and replaced, with one warning. Reusing a valid folder writes nothing, so a
read-only cache works for shards that are already there.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import tiktoken
from tqdm import tqdm

from minigpt import tokenizer as tok
from minigpt.data import pieces, shards
from minigpt.data.cache import cache_key, default_cache_dir, new_build_dir, publish, sweep_dead_builds
from minigpt.data.corpus import open_corpus
from minigpt.data.files import Source
from minigpt.data.pieces import cut_at_lines, cut_source, source_length, split_documents, spread_sample
from minigpt.data.shards import LITTLE_ENDIAN, SPLITS, Prepared, ShardMeta, SplitStats, Unusable, shard_dtype
from minigpt.data.writer import RoundTrip, ShardFiles
from minigpt.errors import DISK_FULL, MiniGPTError

logger = logging.getLogger(__name__)

MIN_VAL_FRACTION, MAX_VAL_FRACTION = 1e-6, 0.5  # below the minimum, 1 / val_fraction stops being a usable stride
DEFAULT_VAL_FRACTION = 0.1
"""The share of a corpus held out for validation unless a run says otherwise; also the split assumed for a
checkpoint that does not record its own."""
BATCH_CHARS = 1 << 22  # this much text goes to the tokenizer threads at once
BPE_SAMPLE_CHARS = 32 << 20  # bpe:N learns its merges from at most this much training text, spread over all of it
FULL_CHECK_EVERY = 16  # every piece's tokens are checked to give back its length in bytes, every 16th its bytes
T = TypeVar("T")


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

    def labelled() -> Iterator[tuple[str, Source]]:
        if held_out is None:
            return split_documents(corpus.sources(), val_fraction, source_length, cut_source)
        return itertools.chain((("train", s) for s in corpus.sources()), (("val", s) for s in held_out.sources()))

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
        training_text = (source() for split, source in labelled() if split == "train")
        enc = tokenizer or _build_tokenizer(tokenizer_spec, spread_sample(training_text, BPE_SAMPLE_CHARS, total))
        tok.save(enc, tmp / shards.TOKENIZER_FILE)
        dtype = shard_dtype(enc.n_vocab)
        documents, written = _write_shards(enc, labelled(), tmp, dtype, progress, total)
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
        if exc.errno not in DISK_FULL:
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


def _write_shards(
    enc: tiktoken.Encoding, labelled: Iterable[tuple[str, Source]], out: Path, dtype: str, progress: bool,
    total_bytes: int | None = None,
) -> tuple[int, dict[str, SplitStats]]:  # fmt: skip
    """Tokenize labelled documents in parallel batches of pieces, appending ids to ``train.bin``/``val.bin``; the
    progress bar counts bytes of text, out of `total_bytes` (with an ETA) when that is known.

    Returns the number of documents (separators written) and each split's stats.
    """
    little_endian = LITTLE_ENDIAN[dtype]
    separator = np.array([tok.eot_id(enc)], dtype=little_endian)
    counts = dict.fromkeys(("documents", "train_bytes", "val_bytes"), 0)
    byte_level = tok.is_byte_tokenizer(enc)
    encode = _array_encoder(enc, little_endian)
    check = None if byte_level else RoundTrip(enc, FULL_CHECK_EVERY)
    with (
        ShardFiles(out) as shard_files,
        tqdm(desc="tokenizing", total=total_bytes, unit="B", unit_scale=True, disable=None if progress else True) as bar,
    ):
        # Byte tokens cannot change where text is cut, so those pieces need no safe place to cut.
        safe_cut = None if byte_level else tok.safe_cut(enc)
        batches = _batches(_chunks(labelled, cut=not byte_level, safe_cut=safe_cut), BATCH_CHARS)
        # Each batch is handed to the tokenizer threads as soon as it is read, and its tokens taken once the next
        # one is: reading overlaps tokenizing, and two batches at most are in memory.
        for batch, token_arrays in _one_behind((batch, encode([text for _, text, _ in batch])) for batch in batches):
            parts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
            for (split, text, starts_document), tokens in zip(batch, token_arrays):
                if starts_document:
                    parts[split].append(separator)
                    counts["documents"] += 1
                    at = 0
                parts[split].append(tokens)
                size = len(tokens) if byte_level else len(text) if text.isascii() else len(text.encode())
                if check is not None:
                    check(text, size, tokens, counts["documents"], at)
                at += size
                counts[f"{split}_bytes"] += size
                bar.update(size)
            for split, arrays in parts.items():
                if arrays:  # one array per batch, copied only when it has several (many small documents)
                    shard_files.append(split, np.concatenate(arrays) if len(arrays) > 1 else arrays[0])
    stats = {
        split: SplitStats(shard_files.tokens[split], counts[f"{split}_bytes"], shard_files.digests[split].hexdigest())
        for split in SPLITS
    }
    return counts["documents"], stats


def _array_encoder(enc: tiktoken.Encoding, dtype: str) -> Callable[[list[str]], Iterable[np.ndarray]]:
    """A function from texts to their token arrays. Byte tokens are the UTF-8 bytes themselves, so the `bytes`
    tokenizer needs no tokenizing at all (numpy reads them directly, at memory speed). Others run on a thread per
    core, starting at once: the arrays come when iterated. Each thread also turns its tokens into an array, which
    took a fifth of the time in the one thread that collects them."""
    if tok.is_byte_tokenizer(enc):
        return lambda texts: [np.frombuffer(text.encode(), dtype=np.uint8).astype(dtype) for text in texts]
    threads = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="tokenize")

    def encode(text: str) -> np.ndarray:
        # tok.encode's meaning (special tokens are ordinary text), without a list of Python ints on the way.
        return enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=()).astype(dtype)

    return lambda texts: threads.map(encode, texts)


def _one_behind(items: Iterable[T]) -> Iterator[T]:
    """`items`, each given out once the next has been made (or the last one is)."""
    previous: list[T] = []
    for item in items:
        yield from previous
        previous = [item]
    yield from previous


def _chunks(
    labelled: Iterable[tuple[str, Source]], cut: bool, safe_cut: re.Pattern[str] | None
) -> Iterator[tuple[str, str, bool]]:
    """(split, text chunk, whether it starts a document): with `cut`, pieces end only where tokens cannot change."""
    for split, source in labelled:
        texts = cut_at_lines(source(), pieces.CHUNK_CHARS, safe_cut) if cut else source()
        for index, chunk in enumerate(texts):
            yield split, chunk, index == 0


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
