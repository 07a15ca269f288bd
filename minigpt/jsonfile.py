"""Reading JSON written by someone else: one line naming the file for anything that is not a JSON object.

Foreign JSON (a Hugging Face folder, a crafted checkpoint's records) is hostile until checked: it may be
unreadable, not UTF-8, nested deeper than Python's recursion limit, or far larger than any real file of
its kind. The values inside are checked by whoever reads them (see `field`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from minigpt.errors import MiniGPTError

MAX_BYTES = 1 << 30
"""The largest JSON file read (1 GiB): the largest real tokenizer.json files are tens of megabytes."""


def read_object(path: Path, where: str, max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """The JSON object in `path`; `where` starts the one-line error (the source the file belongs to)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise MiniGPTError(f"{where}: {path.name} is {size:,} bytes, more than any real one ({max_bytes:,}): not a usable file")
        data = json.loads(path.read_text(encoding="utf-8"))
    except MiniGPTError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else type(exc).__name__
        raise MiniGPTError(f"{where}: cannot read {path.name} ({reason})") from None
    if not isinstance(data, dict):
        raise MiniGPTError(f"{where}: {path.name} is not a JSON object")
    return data


def field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """`data[key]` when it is of `kind` (bool is never an int here); one line naming `where` and `key` if not."""
    value = data.get(key)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise MiniGPTError(f"{where}: {key} must be {names}, not {show(value)}")
    return value


def size_field(data: dict[str, Any], key: str, where: str, default: int, at_most: int) -> int:
    """`data[key]`, or `default` when the key is absent, when it is an int from 1 to `at_most`; one line naming
    `where` and `key` if not."""
    value = field(data, key, int, where) if key in data else default
    if not 1 <= value <= at_most:
        raise MiniGPTError(f"{where}: {key} must be a positive integer up to {at_most:,}, not {show(value)}")
    return value


def show(value: Any) -> str:
    """`value` in one short line for an error message, whatever it is (JSON, or anything a pickle may hold)."""
    try:
        text = json.dumps(value, default=repr)
    except (ValueError, RecursionError):  # a circular or very deep structure
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."
