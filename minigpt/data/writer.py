"""Writing token shards: ``train.bin`` and ``val.bin``, hashed and written on threads of their own, and the check
that every piece's tokens give back its text."""

from __future__ import annotations

import hashlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tiktoken

from minigpt.data.shards import SPLITS
from minigpt.errors import MiniGPTError


class ShardFiles:
    """``train.bin`` and ``val.bin`` being written. Arrays are hashed on one thread and written on another, so that
    hashing and writing one batch overlap each other and reading and tokenizing the next (all of them release the
    GIL); at most a few batches wait, which bounds the memory."""

    def __init__(self, out: Path) -> None:
        self.files = {split: (out / f"{split}.bin").open("wb") for split in SPLITS}
        self.digests = {split: hashlib.sha256() for split in SPLITS}
        self.tokens = dict.fromkeys(SPLITS, 0)
        # One thread for each job, so that arrays are hashed and written in the order they come.
        self.threads = [ThreadPoolExecutor(1, thread_name_prefix=f"shards-{job}") for job in ("hash", "write")]
        self.waiting: deque[Future[object]] = deque()

    def append(self, split: str, array: np.ndarray) -> None:
        self.tokens[split] += len(array)
        hasher, writer = self.threads
        self.waiting += [hasher.submit(self.digests[split].update, array), writer.submit(self.files[split].write, array)]
        while len(self.waiting) > 8:
            self.waiting.popleft().result()  # raises what writing raised (a full disk)

    def __enter__(self) -> ShardFiles:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        try:
            while self.waiting and kind is None:  # after an error, what waits is dropped with the build folder
                self.waiting.popleft().result()
        finally:
            for thread in self.threads:
                thread.shutdown(cancel_futures=True)
            for f in self.files.values():
                f.close()


class RoundTrip:
    """Checks that tokens give back their text: the byte length of every piece's tokens, and every
    `full_every`-th piece byte for byte; a piece that fails is a `MiniGPTError` naming where."""

    def __init__(self, enc: tiktoken.Encoding, full_every: int) -> None:
        self.enc, self.full_every = enc, full_every
        self.lengths = np.array([_token_length(enc, i) for i in range(enc.n_vocab)], dtype=np.int64)
        self.pieces = 0

    def __call__(self, text: str, size: int, tokens: np.ndarray, document: int, at: int) -> None:
        """`text` of `size` UTF-8 bytes, `at` bytes into the `document`-th document, encoded as `tokens`."""
        self.pieces += 1
        if self.lengths[tokens].sum() == size and (self.pieces % self.full_every or self._same(text, tokens) is None):
            return
        offset = self._same(text, tokens)
        snippet = text.encode()[offset : offset + 20].decode(errors="replace")
        raise MiniGPTError(
            f"tokenizer {self.enc.name!r} loses text: document {document} of the corpus does not come back from its "
            f"tokens from byte {at + (offset or 0)} on ({snippet!r}): its split pattern must match every character; "
            "use another tokenizer (bytes, bpe:N, gpt2)"
        )

    def _same(self, text: str, tokens: np.ndarray) -> int | None:
        """None when `tokens` decode to `text`, else the offset of the first byte that differs."""
        expected, back = text.encode(), self.enc.decode_bytes(tokens.tolist())
        if expected == back:
            return None
        return next((i for i, (a, b) in enumerate(zip(expected, back)) if a != b), min(len(expected), len(back)))


def _token_length(enc: tiktoken.Encoding, token: int) -> int:
    try:
        return len(enc.decode_single_token_bytes(token))
    except KeyError:  # an id no token has
        return 0
