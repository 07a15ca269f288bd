"""Corpora: resolve a source spec string into a stream of text documents and a fingerprint of their content.

A spec is resolved in this order:

1. ``hf:NAME[:CONFIG][?OPTIONS]``: a dataset loaded with ``datasets.load_dataset(NAME, CONFIG, ...)``; each row's
   text field is one document. NAME is a Hub name (``hf:roneneldan/TinyStories``,
   ``hf:HuggingFaceFW/fineweb-edu:sample-10BT``), a local dataset folder (``hf:/data/my_dataset``) or a packaged
   builder with local files (``hf:parquet?data_files=/tmp/x.parquet``, also ``json``, ``csv``, ``arrow``, ``text``).
   OPTIONS are URL query pairs: ``split`` (default ``train``), ``field`` (default ``text``), ``streaming``
   (``1`` to stream rows instead of downloading the whole split), ``limit`` (at most N documents) and
   ``data_files`` (repeat it for several files). A folder written by ``save_to_disk`` (``hf:/data/saved``) is
   opened with ``datasets.load_from_disk``: ``split`` picks a split of a saved ``DatasetDict``, and is an error for
   a single saved ``Dataset``, which has none; it is memory-mapped, so ``streaming`` changes nothing there.
2. An existing local path: a file is one document; a folder gives every text file below it, recursively, in sorted
   path order. A local path wins over a builtin name. A single file that is binary (a NUL byte in its first 8 KiB)
   is an error, and so is a device, pipe or socket.
3. A builtin name: ``pydoc`` (the default, offline: the prose of Python's reference documentation shipped in
   ``pydoc_data.topics``, one topic per document, sorted by key), ``stdlib`` (the top-level ``.py`` files of
   the standard library, ~5 MB of code) or ``shakespeare`` (tiny-shakespeare, downloaded once into the cache).
4. A glob pattern (``notes/**/*.md``; ``**`` matches folders recursively): each matching file is one document.

Folders and globs skip hidden files and folders (a name starting with ``.``) and binaries: files with a known
binary extension, or with a NUL byte in their first 8 KiB. Any other file must be UTF-8. Empty and whitespace-only
documents are skipped; a corpus without any text is an error.

The fingerprint of local files hashes their names, sizes and whole content, so any change to the text is seen
(size and modification time alone would miss an edit that keeps both); so does that of a folder written by
``save_to_disk``, over the files of the split it reads. A file whose content does not match its
stat size (``/proc`` files, a file being written) cannot be fingerprinted and is an error.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import os
import sysconfig
import tempfile
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import parse_qs

from minigpt.errors import MiniGPTError

DEFAULT_CORPUS = "pydoc"
BUILTINS = ("pydoc", "stdlib", "shakespeare")
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"

BINARY_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .gif .bmp .ico .webp .pdf .zip .gz .bz2 .xz .zst .tar .7z .whl .pyc .pyo .so .dylib .dll .exe "
    ".o .a .bin .npy .npz .pt .pth .ckpt .safetensors .parquet .arrow .pkl .db .sqlite .woff .woff2 .ttf .mp3 "
    ".mp4 .wav".split()
)
_SNIFF_BYTES = 8192
_HASH_CHUNK = 1 << 20
_HF_OPTIONS = ("split", "field", "streaming", "limit", "data_files")


class Corpus(Protocol):
    """A source of documents: `documents` can be iterated more than once (BPE training, then tokenizing)."""

    spec: str

    def documents(self) -> Iterator[str]:
        """Stream the non-empty documents, in a fixed order."""
        ...

    def fingerprint(self) -> str:
        """A hex digest that changes whenever the content does."""
        ...

    def size_hint(self) -> int | None:
        """About how many bytes of text `documents` yields, for a progress bar's total; None when unknown."""
        ...


def default_cache_dir() -> Path:
    """Where downloads and prepared shards live: ``$MINIGPT_CACHE``, else ``~/.cache/minigpt``."""
    return Path(os.environ.get("MINIGPT_CACHE") or Path.home() / ".cache" / "minigpt").expanduser()


def cache_dir_error(folder: Path, exc: OSError) -> MiniGPTError:
    """The one-line error for a cache folder that cannot be created or written to."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason = "it or a folder above it is a file"
    else:
        reason = exc.strerror or type(exc).__name__
    return MiniGPTError(
        f"cannot write to the cache folder {folder} ({reason}): pass --cache_dir (or set MINIGPT_CACHE) "
        "to a writable folder"
    )


def open_corpus(spec: str, cache_dir: Path | None = None) -> Corpus:
    """Resolve `spec` (see the module docstring) into a corpus; `cache_dir` receives downloads."""
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    if spec.startswith("hf:"):
        return HFCorpus.open(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        if _has_nul(path):
            raise MiniGPTError(
                f"corpus file {path} is binary (a NUL byte in its first {_SNIFF_BYTES // 1024} KiB): "
                "pass a UTF-8 text file"
            )
        return FileCorpus(spec, [path])
    if path.is_dir():
        return FileCorpus(spec, _folder_files(path))
    if path.exists():
        raise MiniGPTError(
            f"corpus '{spec}' is neither a regular file nor a folder (a device, pipe or socket): "
            "save its text to a file and pass that"
        )
    if spec in BUILTINS:
        return _builtin(spec, cache_dir)
    if glob.has_magic(spec):
        return FileCorpus(spec, _glob_files(spec))
    raise MiniGPTError(
        f"corpus '{spec}' not found: pass an existing file, folder or glob, hf:NAME for a Hugging Face dataset, "
        f"or a builtin ({', '.join(BUILTINS)})"
    )


@dataclass
class FileCorpus:
    """Local files, one document each, in the given order."""

    spec: str
    files: list[Path]

    def documents(self) -> Iterator[str]:
        return _non_empty(self.spec, (_read_utf8(path) for path in self.files))

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
                while chunk := f.read(_HASH_CHUNK):
                    digest.update(chunk)
                    read += len(chunk)
            if read != size:
                raise MiniGPTError(
                    f"{path} is not a stable regular file (its size says {size} bytes but {read} were read, as with "
                    "/proc files or a file still being written): copy it to a regular file and pass that"
                )
        return digest.hexdigest()


@dataclass
class TextCorpus:
    """Documents that already live in memory (a builtin shipped with Python)."""

    spec: str
    texts: list[str]

    def documents(self) -> Iterator[str]:
        return _non_empty(self.spec, iter(self.texts))

    def size_hint(self) -> int | None:
        return sum(len(text.encode()) for text in self.texts)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for text in self.texts:
            data = text.encode()
            digest.update(f"{len(data)}\0".encode())
            digest.update(data)
        return digest.hexdigest()


@dataclass
class HFCorpus:
    """Rows of a `datasets` dataset (Hub or local files); the `text_field` of each row is one document."""

    spec: str
    dataset: Any  # datasets.Dataset, or datasets.IterableDataset when streaming
    text_field: str
    limit: int | None
    content_id: str  # stands for the content in the fingerprint

    @classmethod
    def open(cls, spec: str) -> HFCorpus:
        """Load the dataset named by an ``hf:`` spec; failures become one-line `MiniGPTError`s."""
        name, config, options = _parse_hf_spec(spec)
        split = options.get("split", "train")
        text_field = options.get("field", "text")
        streaming = options.get("streaming", "0") not in ("0", "false", "")
        limit = _parse_limit(spec, options.get("limit"))
        saved = Path(name).expanduser()
        if _is_saved_dataset(saved):
            dataset, files = _load_saved(spec, saved, options.get("split"))
            content = FileCorpus(spec, files).fingerprint()
        else:
            dataset = _load_dataset(spec, name, config, split, streaming, options.get("data_files"))
            # A streamed dataset has no content hash, so the spec itself stands for the content.
            content = spec if streaming else dataset._fingerprint  # datasets has no public accessor for it
        columns = dataset.column_names
        if columns is not None and text_field not in columns:
            raise MiniGPTError(
                f"dataset '{spec}' has no field '{text_field}': choose one of its columns with ?field=NAME "
                f"(columns: {', '.join(columns)})"
            )
        return cls(spec, dataset, text_field, limit, "\0".join([content, split, text_field, str(limit)]))

    def documents(self) -> Iterator[str]:
        rows = self.dataset.select_columns([self.text_field]).iter(batch_size=1024)
        texts = (text for batch in rows for text in batch[self.text_field] if isinstance(text, str))
        return _non_empty(self.spec, itertools.islice(texts, self.limit))

    def fingerprint(self) -> str:
        return hashlib.sha256(self.content_id.encode()).hexdigest()

    def size_hint(self) -> int | None:
        """The Arrow size of the rows (close to the text's, for a text dataset); unknown when streamed or limited."""
        nbytes = getattr(getattr(self.dataset, "data", None), "nbytes", None)  # a streamed dataset has no table
        return nbytes if self.limit is None else None


def _parse_hf_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """``hf:NAME[:CONFIG][?k=v&...]`` -> (NAME, CONFIG or None, options); `data_files` may repeat."""
    head, _, query = spec.removeprefix("hf:").partition("?")
    name, _, config = head.partition(":")
    if not name:
        raise MiniGPTError(f"bad dataset spec '{spec}': write hf:NAME[:CONFIG][?split=train&field=text]")
    pairs = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(pairs) - set(_HF_OPTIONS))
    if unknown:
        raise MiniGPTError(f"unknown option(s) {', '.join(unknown)} in '{spec}': use {', '.join(_HF_OPTIONS)}")
    options: dict[str, Any] = {key: values[-1] for key, values in pairs.items()}
    if "data_files" in pairs:
        options["data_files"] = pairs["data_files"]
    return name, config or None, options


def _parse_limit(spec: str, limit: str | None) -> int | None:
    if limit is None:
        return None
    if not limit.isdigit() or int(limit) == 0:
        raise MiniGPTError(f"bad limit '{limit}' in '{spec}': write limit=N with N a positive number of documents")
    return int(limit)


def _load_dataset(spec: str, name: str, config: str | None, split: str, streaming: bool, data_files: Any) -> Any:
    import datasets  # slow to import; only HF corpora need it

    try:
        return datasets.load_dataset(name, config, split=split, streaming=streaming, data_files=data_files)
    except Exception as exc:  # datasets raises connection, file, value and hub errors of many kinds
        raise MiniGPTError(
            f"could not load dataset '{spec}' ({_reason(exc)}): check the name, config and split "
            "and the network, or point at local files, e.g. hf:parquet?data_files=path/to/data.parquet"
        ) from None


def _is_saved_dataset(folder: Path) -> bool:
    """Whether `folder` was written by ``save_to_disk``: a Dataset's state and info, or a DatasetDict's split list."""
    if (folder / "dataset_dict.json").is_file():
        return True
    return (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()


def _load_saved(spec: str, folder: Path, split: str | None) -> tuple[Any, list[Path]]:
    """The dataset saved in `folder` (the `split` of a DatasetDict, ``train`` by default) and the files holding it."""
    import datasets  # slow to import; only HF corpora need it

    try:
        saved = datasets.load_from_disk(str(folder))
    except Exception as exc:  # a damaged folder raises file, JSON and Arrow errors of many kinds
        raise MiniGPTError(
            f"could not load the saved dataset '{spec}' ({_reason(exc)}): save it again with save_to_disk"
        ) from None
    if isinstance(saved, datasets.DatasetDict):
        split = split or "train"
        if split not in saved:
            raise MiniGPTError(
                f"dataset '{spec}' has no split '{split}': choose one with ?split=NAME (splits: {', '.join(saved)})"
            )
        saved, folder = saved[split], folder / split  # DatasetDict.save_to_disk gives each split its own folder
    elif split is not None:
        raise MiniGPTError(f"dataset '{spec}' is one saved Dataset, not a DatasetDict of splits: drop ?split={split}")
    # Its metadata and the Arrow files it maps, not the whole folder: `map` leaves cache files there.
    data = [Path(entry["filename"]) for entry in saved.cache_files]
    return saved, [folder / "dataset_info.json", folder / "state.json", *data]


def _reason(exc: Exception) -> str:
    """The exception's type and the first line of its message, short enough for a one-line error."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"


def _builtin(name: str, cache_dir: Path) -> Corpus:
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
            while chunk := response.read(_HASH_CHUNK):
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


def _folder_files(folder: Path) -> list[Path]:
    files = [path for path in sorted(folder.rglob("*")) if _is_text_file(path, path.relative_to(folder))]
    if not files:
        raise MiniGPTError(f"folder '{folder}' has no text files: add UTF-8 text files to it or pass another corpus")
    return files


def _glob_files(pattern: str) -> list[Path]:
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
    return path.suffix.lower() not in BINARY_EXTENSIONS and not _has_nul(path)


def _has_nul(path: Path) -> bool:
    """Whether the file starts like a binary: a NUL byte in its first 8 KiB, which text files practically never hold."""
    with _open(path, "rb") as f:
        return b"\0" in f.read(_SNIFF_BYTES)


def _open(path: Path, mode: str = "r", **kwargs: Any) -> IO[Any]:
    """`path.open`, with a file that cannot be read (permissions, vanished) as a one-line user error."""
    try:
        return path.open(mode, **kwargs)
    except OSError as err:
        raise MiniGPTError(f"cannot read {path} ({err.strerror or err}): check that it exists and that you may read it") from None


def _read_utf8(path: Path) -> str:
    try:
        # newline="" keeps the file's own line endings, so byte counts match the file.
        with _open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError as err:
        raise MiniGPTError(
            f"{path} is not UTF-8 (bad byte at offset {err.start}): convert it to UTF-8 (e.g. with iconv) "
            "or remove it from the corpus"
        ) from None


def _non_empty(spec: str, texts: Iterable[str]) -> Iterator[str]:
    """Yield the texts that hold more than whitespace; raise if there are none at all."""
    found = False
    for text in texts:
        if text and not text.isspace():
            found = True
            yield text
    if not found:
        raise MiniGPTError(f"corpus '{spec}' contains no text: check that its files or rows are not empty")
