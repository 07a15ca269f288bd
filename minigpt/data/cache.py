"""The cache folder (`default_cache_dir`), and the shard folders in it: one per (corpus, tokenizer, split) key,
built aside and published atomically.

A folder ``<cache_dir>/<key>`` is built under a temporary sibling ``.<key>.<host>.<pid>.<random>.tmp`` and renamed
when complete, so an interrupted run never leaves an entry that looks valid. When two processes build the same
key, the first rename wins and the other keeps the winner's folder if it checks out (a damaged one is replaced).
A run killed before it could clean up (``kill -9``) leaves its temporary folder behind; `sweep_dead_builds`
removes such folders whose process no longer runs on this host.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any

from minigpt.data.shards import FORMAT_VERSION, Prepared, Unusable, verified
from minigpt.errors import MiniGPTError
from minigpt.folders import dangling_link

logger = logging.getLogger(__name__)

# ``.<key>.<host>.<pid>.<random>.tmp``: the host part has no dots (see `_host`), so the name splits unambiguously.
_TEMP_NAME = re.compile(r"\.[0-9a-f]{16}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]{1,9})\.[0-9a-f]{8}\.tmp")


def default_cache_dir() -> Path:
    """Where downloads and prepared shards live: ``$MINIGPT_CACHE``, else ``~/.cache/minigpt``."""
    return Path(os.environ.get("MINIGPT_CACHE") or Path.home() / ".cache" / "minigpt").expanduser()


def cache_dir_error(folder: Path, exc: OSError) -> MiniGPTError:
    """The one-line error for a cache folder that cannot be created or written to."""
    if (link := dangling_link(folder)) is not None:
        reason = link
    elif isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason = "it or a folder above it is a file"
    else:
        reason = exc.strerror or type(exc).__name__
    return MiniGPTError(
        f"cannot write to the cache folder {folder} ({reason}): pass --cache_dir (or set MINIGPT_CACHE) "
        "to a writable folder"
    )


def cache_key(fingerprint: str, tokenizer_spec: str, val_fraction: float) -> str:
    """The folder name of the shards of the corpus `fingerprint`, tokenized with `tokenizer_spec`, split by
    `val_fraction`."""
    key = json.dumps([FORMAT_VERSION, fingerprint, tokenizer_spec, val_fraction])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def new_build_dir(target: Path) -> Path:
    """Create the temporary sibling that `target` is built in, named for this process (see `sweep_dead_builds`)."""
    tmp = owned_sibling(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise cache_dir_error(target.parent, exc) from None
    return tmp


def publish(tmp: Path, built: Prepared, expected: dict[str, Any]) -> Prepared:
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
            return verified(target, expected)
        except Unusable:
            _discard(target)


def _discard(path: Path) -> None:
    """Delete `path`, first renamed to a name this process owns, so a crash halfway leaves only sweepable litter."""
    trash = owned_sibling(path)
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


def owned_sibling(path: Path) -> Path:
    """A fresh name beside `path` that tells which process owns it: ``.<name>.<host>.<pid>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def host() -> str:
    """Where this process's pid means something: the host name, plus the pid namespace where Linux has one."""
    name = socket.gethostname()
    with contextlib.suppress(OSError):  # containers can share a host name but not their pids
        name += f"-{os.stat('/proc/self/ns/pid').st_ino}"
    # Only letters, digits and dashes, so the temporary names split at their dots unambiguously.
    return re.sub(r"[^A-Za-z0-9-]", "-", name)


def sweep_dead_builds(cache_dir: Path) -> None:
    """Remove the temporary folders whose process died on this host without cleaning up (``kill -9``, power loss)."""
    if os.name != "posix":  # the liveness check needs POSIX signal 0; on Windows os.kill would end the process
        return
    try:
        names = os.listdir(cache_dir)
    except OSError:  # no cache folder yet, or not a folder at all, which building then reports
        return
    here = host()
    for name in names:
        match = _TEMP_NAME.fullmatch(name)
        # A pid says nothing about another host's processes (a cache on a shared disk), so only ours are judged.
        if match is None or match["host"] != here or _alive(int(match["pid"])):
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
