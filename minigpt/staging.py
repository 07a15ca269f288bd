"""Temporary folders that a command writes its output into before moving it into place, each locked by its writer
for as long as the writer lives: the kernel drops the lock however the process ends, so a folder whose lock anyone
can take was left by a writer that was killed (``kill -9``, power loss), and the next writer removes it, after
undoing whatever half-done move into place it records (`recover`)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

NAME_KEPT = 64
"""Characters of the output's name kept in a temporary folder's name: a name of 255 characters has a legal twin."""

MOVING = "moving"
"""The file in a temporary folder that lists, one per line, the files its writer is moving into place."""
ASIDE = "replaced"
"""The folder, inside a temporary one, where the files a move replaces wait until all of the new ones are in."""


def _pattern(kind: str, name: str | None) -> re.Pattern[str]:
    """``.<name, at most NAME_KEPT characters>.<16 hex digits>.<kind>.tmp``; any name when `name` is None."""
    stem = re.escape(name[:NAME_KEPT]) if name is not None else f".{{1,{NAME_KEPT}}}"
    return re.compile(rf"\.{stem}\.[0-9a-f]{{16}}\.{re.escape(kind)}\.tmp", re.DOTALL)


def is_temporary(entry: str, kind: str, name: str) -> bool:
    """Whether `entry` is the name of a temporary folder that a writer of `kind` for `name` makes."""
    return _pattern(kind, name).fullmatch(entry) is not None


@contextmanager
def staging_folder(parent: Path, name: str, kind: str) -> Iterator[Path]:
    """A new folder in `parent` named after `name` and `kind`, locked while the block runs and removed after it
    with whatever is still in it."""
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


def sweep(parent: Path, kind: str, name: str | None = None, recover: Callable[[Path], None] | None = None) -> None:
    """Remove the temporary folders of `kind` (for `name`, or any) in `parent` that killed writers left, each after
    `recover(folder)` has undone what it records; a live writer holds its folder's lock, so its folder is never
    touched."""
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    pattern = _pattern(kind, name)
    for entry in entries:
        if pattern.fullmatch(entry) is None:
            continue
        try:
            fd = os.open(parent / entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:  # gone already, or not a folder
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if recover is not None:
                recover(parent / entry)
            shutil.rmtree(parent / entry)
            log.info("removed %s, left behind by a killed %s run", parent / entry, kind)
        except OSError:  # BlockingIOError: a live writer; or another sweep removed it first
            pass
        finally:
            os.close(fd)


def move_in(staged: Path, out: Path, names: list[str]) -> None:
    """Move the files `names` from `staged` over those of `out`, all or none: each file they replace is set aside
    in `staged` until all are in, and if the move stops (an error, a signal), it is undone. The names are written
    down first, so that the next writer undoes the move of one killed halfway (`undo_unfinished`)."""
    (staged / ASIDE).mkdir()
    (staged / MOVING).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    try:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.replace(out / name, staged / ASIDE / name)
            os.replace(staged / name, out / name)
    except BaseException:
        _put_back(staged, out, names)
        raise


def undo_unfinished(dead: Path, out: Path) -> None:
    """Undo what a writer killed while moving files from `dead` (its temporary folder) into `out` left: the files it
    replaced return and its own go, unless every one of its own was in (then the move is whole and stays)."""
    names = moving(dead)
    if any(os.path.lexists(dead / name) for name in names):
        _put_back(dead, out, names)


def _put_back(staged: Path, out: Path, names: list[str]) -> None:
    """Undo a move of `names` from `staged` into `out`: each file set aside returns, and each moved in without one
    to replace is removed; files not yet moved are left in `staged`."""
    for name in names:
        with contextlib.suppress(OSError):
            if os.path.lexists(staged / ASIDE / name):
                os.replace(staged / ASIDE / name, out / name)
            elif not os.path.lexists(staged / name):
                (out / name).unlink()


def moving(folder: Path) -> list[str]:
    """The files a (killed) writer recorded it was moving from `folder` into place; none if it had not begun."""
    try:
        text = (folder / MOVING).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [name for name in text.splitlines() if name and "/" not in name and name not in (".", "..")]


@contextmanager
def locked(folder: Path, wait: bool = True) -> Iterator[None]:
    """Hold `folder`'s exclusive lock while the block runs (waiting for it, or with `wait` False raising
    `BlockingIOError` when another process holds it); the kernel drops it if this process dies."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)
