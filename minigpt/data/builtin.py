"""The builtin corpora, by name: ``pydoc`` (the default of the bundled configs; offline: the prose of Python's
reference documentation shipped in ``pydoc_data.topics``, one topic per document, sorted by key), ``stdlib`` (the
top-level ``.py`` files of the standard library, ~5 MB of code) and ``shakespeare`` (tiny-shakespeare,
downloaded once into the cache).
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from minigpt.data.cache import cache_dir_error
from minigpt.data.files import HASH_CHUNK, Corpus, FileCorpus, Source, in_memory, non_empty, whole
from minigpt.errors import MiniGPTError

BUILTINS = ("pydoc", "stdlib", "shakespeare")
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


@dataclass
class TextCorpus:
    """Documents that already live in memory (a builtin shipped with Python)."""

    spec: str
    texts: list[str]

    def sources(self) -> Iterator[Source]:
        return non_empty(self.spec, in_memory(self.texts))

    def documents(self) -> Iterator[str]:
        return whole(self.sources())

    def size_hint(self) -> int | None:
        return sum(len(text.encode()) for text in self.texts)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for text in self.texts:
            data = text.encode()
            digest.update(f"{len(data)}\0".encode())
            digest.update(data)
        return digest.hexdigest()


def builtin(name: str, cache_dir: Path) -> Corpus:
    if name == "pydoc":
        from pydoc_data.topics import topics

        return TextCorpus(name, [topics[key] for key in sorted(topics)])
    if name == "stdlib":
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        return FileCorpus(name, sorted(stdlib.glob("*.py")))
    return FileCorpus(name, [_download_once(SHAKESPEARE_URL, cache_dir / "tinyshakespeare.txt")])


def _download_once(url: str, path: Path) -> Path:
    """Download `url` to `path` unless it is already there; a tmp file then a rename, so never half-written."""
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise cache_dir_error(path.parent, exc) from None
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            while chunk := response.read(HASH_CHUNK):
                out.write(chunk)
        os.replace(tmp, path)
    except OSError as exc:  # URLError, HTTPError, timeouts and refused connections are all OSErrors
        raise MiniGPTError(
            f"could not download {url} ({exc}): check the network, or pass a local copy, "
            "e.g. --data path/to/tinyshakespeare.txt"
        ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
