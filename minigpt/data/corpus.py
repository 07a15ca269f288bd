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
3. A builtin name: ``pydoc`` (offline), ``stdlib`` or ``shakespeare`` (see `minigpt.data.builtin`).
4. A glob pattern (``notes/**/*.md``; ``**`` matches folders recursively): each matching file is one document.

How each kind reads its documents and fingerprints them: `minigpt.data.files` (local files, also the rules for
folders, globs, binaries and encodings), `minigpt.data.hub` and `minigpt.data.builtin`.
"""

from __future__ import annotations

import glob
from pathlib import Path

from minigpt.data.builtin import BUILTINS, builtin
from minigpt.data.cache import default_cache_dir
from minigpt.data.files import SNIFF_BYTES, Corpus, FileCorpus, check_lookup, folder_files, glob_files, has_nul
from minigpt.data.hub import HFCorpus
from minigpt.errors import MiniGPTError


def open_corpus(spec: str, cache_dir: Path | None = None) -> Corpus:
    """Resolve `spec` (see the module docstring) into a corpus; `cache_dir` receives downloads."""
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    if not spec.strip():
        raise MiniGPTError("the corpus spec is empty: name a file, folder, glob, hf:NAME or builtin (e.g. pydoc)")
    if spec.startswith("hf:"):
        return HFCorpus.open(spec)
    path = Path(spec).expanduser()
    check_lookup(path)
    if path.is_file():
        if has_nul(path):
            raise MiniGPTError(
                f"corpus file {path} is binary (a NUL byte in its first {SNIFF_BYTES // 1024} KiB): "
                "pass a UTF-8 text file"
            )
        return FileCorpus(spec, [path])
    if path.is_dir():
        return FileCorpus(spec, folder_files(path))
    if path.exists():
        raise MiniGPTError(
            f"corpus '{spec}' is neither a regular file nor a folder (a device, pipe or socket): "
            "save its text to a file and pass that"
        )
    if spec in BUILTINS:
        return builtin(spec, cache_dir)
    if glob.has_magic(spec):
        return FileCorpus(spec, glob_files(spec))
    raise MiniGPTError(
        f"corpus '{spec}' not found: pass an existing file, folder or glob, hf:NAME for a Hugging Face dataset, "
        f"or a builtin ({', '.join(BUILTINS)})"
    )
