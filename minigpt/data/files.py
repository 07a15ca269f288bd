"""Corpora of local text: the `Corpus` protocol every corpus follows, and `FileCorpus`, one document per file.

Folders and globs skip hidden files and folders (a name starting with ``.``) and binaries: files with a known
binary extension, or with a NUL byte in their first 8 KiB. Any other file must be UTF-8. Empty and whitespace-only
documents are skipped (`non_empty`, for every kind of corpus); a corpus without any text is an error.

The fingerprint of local files hashes their names, sizes and whole content, so any change to the text is seen
(size and modification time alone would miss an edit that keeps both). A file whose content does not match its
stat size (``/proc`` files, a file being written) cannot be fingerprinted and is an error.
"""

from __future__ import annotations

import codecs
import functools
import glob
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from minigpt import errors
from minigpt.errors import MiniGPTError

BINARY_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .gif .bmp .ico .webp .pdf .zip .gz .bz2 .xz .zst .tar .7z .whl .pyc .pyo .so .dylib .dll .exe "
    ".o .a .bin .npy .npz .pt .pth .ckpt .safetensors .parquet .arrow .pkl .db .sqlite .woff .woff2 .ttf .mp3 "
    ".mp4 .wav".split()
)
SNIFF_BYTES = 8192
"""A file with a NUL byte in its first SNIFF_BYTES is taken for a binary."""
HASH_CHUNK = 1 << 20
READ_BYTES = 1 << 22
"""Files are read and decoded in blocks of this many bytes, so no document is ever held whole."""

Source = Callable[[], Iterator[str]]
"""One document: each call streams its text anew, in pieces of any size (a character is never split)."""


class Corpus(Protocol):
    """A source of documents: `sources` and `documents` can be iterated more than once (BPE training, then tokenizing)."""

    spec: str

    def sources(self) -> Iterator[Source]:
        """The non-empty documents, in a fixed order, each streamed in pieces when called."""
        ...

    def documents(self) -> Iterator[str]:
        """The non-empty documents as whole texts (`sources` joined)."""
        ...

    def fingerprint(self) -> str:
        """A hex digest that changes whenever the content does."""
        ...

    def size_hint(self) -> int | None:
        """About how many bytes of text `documents` yields, for a progress bar's total; None when unknown."""
        ...


@dataclass
class FileCorpus:
    """Local files, one document each, in the given order."""

    spec: str
    files: list[Path]

    def sources(self) -> Iterator[Source]:
        return non_empty(self.spec, (functools.partial(_read_utf8, path) for path in self.files))

    def documents(self) -> Iterator[str]:
        return whole(self.sources())

    def size_hint(self) -> int | None:
        return sum(path.stat().st_size for path in self.files)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in self.files:
            with _open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                # The name and length frame each file, so moving bytes between files changes the digest too.
                digest.update(f"{path}\0{size}\0".encode())
                read = 0
                while chunk := f.read(HASH_CHUNK):
                    digest.update(chunk)
                    read += len(chunk)
            if read != size:
                raise MiniGPTError(
                    f"{path} is not a stable regular file (its size says {size} bytes but {read} were read, as with "
                    "/proc files or a file still being written): copy it to a regular file and pass that"
                )
        return digest.hexdigest()


def check_lookup(path: Path) -> None:
    """A corpus path the file system refuses to look up, as one line (see `errors.check_lookup`)."""
    errors.check_lookup(path, "a corpus", "name a file, folder, glob, hf:NAME or builtin")


def folder_files(folder: Path) -> list[Path]:
    try:
        found = sorted(folder.rglob("*"))
    except OSError as err:  # a folder that vanished or may not be listed while walking (/proc, /)
        raise MiniGPTError(f"cannot list the files under {folder} ({err.strerror or err}): pass a folder of your text files") from None
    files = [path for path in found if _is_text_file(path, path.relative_to(folder))]
    if not files:
        raise MiniGPTError(f"folder '{folder}' has no text files: add UTF-8 text files to it or pass another corpus")
    return files


def glob_files(pattern: str) -> list[Path]:
    matches = sorted(Path(match) for match in glob.glob(os.path.expanduser(pattern), recursive=True))
    # glob's wildcards already skip hidden names, so only the file name itself is checked here.
    files = [path for path in matches if _is_text_file(path, Path(path.name))]
    if not files:
        raise MiniGPTError(f"no text files match '{pattern}': check the pattern, and quote it so the shell leaves it")
    return files


def _is_text_file(path: Path, shown: Path) -> bool:
    """A regular file, not hidden (no part of `shown` starts with a dot), not a binary by extension or content."""
    if not path.is_file() or any(part.startswith(".") for part in shown.parts):
        return False
    return path.suffix.lower() not in BINARY_EXTENSIONS and not has_nul(path)


def has_nul(path: Path) -> bool:
    """Whether the file starts like a binary: a NUL byte in its first 8 KiB, which text files practically never hold."""
    with _open(path, "rb") as f:
        return b"\0" in _read(f, SNIFF_BYTES, path)


def _open(path: Path, mode: str = "r", **kwargs: Any) -> IO[Any]:
    """`path.open`, with a file that cannot be read (permissions, vanished) as a one-line user error."""
    try:
        return path.open(mode, **kwargs)
    except OSError as err:
        raise MiniGPTError(f"cannot read {path} ({err.strerror or err}): check that it exists and that you may read it") from None


def _read(f: IO[bytes], size: int, path: Path) -> bytes:
    """Up to `size` bytes of `f`, a file that opens but fails to read (/proc/self/mem, a failing disk) as one line."""
    try:
        return f.read(size)
    except OSError as err:
        raise MiniGPTError(f"cannot read {path} ({err.strerror or err}): pass a corpus of readable text files") from None


def _read_utf8(path: Path) -> Iterator[str]:
    """The text of `path` in pieces of about READ_BYTES bytes, line endings as they are (so byte counts match). The
    first piece is small: telling a blank file from a text (`non_empty`) then reads little of it."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # of the block being decoded
    with _open(path, "rb") as f:
        while True:
            block = _read(f, READ_BYTES if offset else min(SNIFF_BYTES, READ_BYTES), path)
            pending = len(decoder.getstate()[0])  # the end of the last block: a character it cut in two
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                raise MiniGPTError(
                    f"{path} is not UTF-8 (bad byte at offset {offset - pending + err.start}): convert it to UTF-8 "
                    "(e.g. with iconv) or remove it from the corpus"
                ) from None
            if text:
                yield text
            if not block:
                return
            offset += len(block)


def whole(sources: Iterable[Source]) -> Iterator[str]:
    """Each document's whole text."""
    return ("".join(source()) for source in sources)


def in_memory(texts: Iterable[str]) -> Iterator[Source]:
    """Texts already in memory, as documents."""
    return (functools.partial(iter, (text,)) for text in texts)


def non_empty(spec: str, sources: Iterable[Source]) -> Iterator[Source]:
    """The documents that hold more than whitespace (read only up to their first other character); raise if there
    are none at all."""
    found = False
    for source in sources:
        if any(piece and not piece.isspace() for piece in source()):
            found = True
            yield source
    if not found:
        raise MiniGPTError(f"corpus '{spec}' contains no text: check that its files or rows are not empty")
