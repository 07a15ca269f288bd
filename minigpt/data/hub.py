"""Hugging Face datasets as corpora: ``hf:NAME[:CONFIG][?OPTIONS]`` (see `minigpt.data.corpus` for the spec).

A dataset is loaded with ``datasets.load_dataset(NAME, CONFIG, ...)``, or, for a folder written by
``save_to_disk``, with ``datasets.load_from_disk``; each row's text field is one document. The fingerprint of a
saved folder hashes the files of the split it reads; that of a Hub or packaged dataset is its ``datasets``
fingerprint (the spec itself when streamed, which has none).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from minigpt.data.files import FileCorpus, Source, in_memory, non_empty, whole
from minigpt.errors import MiniGPTError

OPTIONS = ("split", "field", "streaming", "limit", "data_files")


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
        name, config, options = parse_spec(spec)
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

    def sources(self) -> Iterator[Source]:
        rows = self.dataset.select_columns([self.text_field]).iter(batch_size=1024)
        texts = (text for batch in rows for text in batch[self.text_field] if isinstance(text, str))
        return non_empty(self.spec, in_memory(itertools.islice(texts, self.limit)))

    def documents(self) -> Iterator[str]:
        return whole(self.sources())

    def fingerprint(self) -> str:
        return hashlib.sha256(self.content_id.encode()).hexdigest()

    def size_hint(self) -> int | None:
        """The Arrow size of the rows (close to the text's, for a text dataset); unknown when streamed or limited."""
        nbytes = getattr(getattr(self.dataset, "data", None), "nbytes", None)  # a streamed dataset has no table
        return nbytes if self.limit is None else None


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """``hf:NAME[:CONFIG][?k=v&...]`` -> (NAME, CONFIG or None, options); `data_files` may repeat."""
    head, _, query = spec.removeprefix("hf:").partition("?")
    name, _, config = head.partition(":")
    if not name:
        raise MiniGPTError(f"bad dataset spec '{spec}': write hf:NAME[:CONFIG][?split=train&field=text]")
    pairs = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(pairs) - set(OPTIONS))
    if unknown:
        raise MiniGPTError(f"unknown option(s) {', '.join(unknown)} in '{spec}': use {', '.join(OPTIONS)}")
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
        with _hub_retries_unlogged():
            return datasets.load_dataset(name, config, split=split, streaming=streaming, data_files=data_files)
    except Exception as exc:  # datasets raises connection, file, value and hub errors of many kinds
        raise MiniGPTError(
            f"could not load dataset '{spec}' ({_reason(exc)}): check the name, config and split "
            "and the network, or point at local files, e.g. hf:parquet?data_files=path/to/data.parquet"
        ) from None


@contextmanager
def _hub_retries_unlogged() -> Iterator[None]:
    """huggingface_hub logs every retry of a request that fails (offline: ten lines, each twice) before the error
    that the one line reports; only its errors are let through."""
    hub = logging.getLogger("huggingface_hub")
    level = hub.level
    hub.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub.setLevel(level)


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
