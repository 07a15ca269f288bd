"""Temporary folders that a command writes its output into before moving it into place, each locked by its writer
for as long as the writer lives: the kernel drops the lock however the process ends, so a folder whose lock anyone
can take was left by a writer that was killed (``kill -9``, power loss), and is removed by the next one."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

NAME_KEPT = 64
"""Characters of the output's name kept in a temporary folder's name: a name of 255 characters has a legal twin."""


def _pattern(kind: str) -> re.Pattern[str]:
    """``.<name, at most NAME_KEPT characters>.<16 hex digits>.<kind>.tmp``."""
    return re.compile(rf"\..{{1,{NAME_KEPT}}}\.[0-9a-f]{{16}}\.{re.escape(kind)}\.tmp", re.DOTALL)


def is_temporary(name: str, kind: str) -> bool:
    """Whether `name` is that of a temporary folder of `kind` (this process's own, or anyone's)."""
    return _pattern(kind).fullmatch(name) is not None


@contextmanager
def staging_folder(parent: Path, name: str, kind: str) -> Iterator[Path]:
    """A new folder in `parent` named after `name` and `kind`, locked while the block runs and removed after it
    with whatever is still in it. Folders of the same `kind` that killed writers left in `parent` are removed
    first (a live writer's are never touched)."""
    sweep(parent, kind)
    while True:
        folder = parent / f".{name[:NAME_KEPT]}.{secrets.token_hex(8)}.{kind}.tmp"
        folder.mkdir()
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # a sweep removed it before this process could lock it
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.stat(folder)):
                break
        except (BlockingIOError, FileNotFoundError):  # a sweep took it between mkdir and flock
            pass
        os.close(fd)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def sweep(parent: Path, kind: str) -> None:
    """Remove the temporary folders of `kind` in `parent` that killed writers left: a live writer holds its
    folder's lock, so its folder is never touched."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not is_temporary(name, kind):
            continue
        try:
            fd = os.open(parent / name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:  # gone already, or not a folder of ours
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(parent / name)
            log.info("removed %s, left behind by a killed %s run", parent / name, kind)
        except OSError:  # BlockingIOError: a live writer; or another sweep removed it first
            pass
        finally:
            os.close(fd)
