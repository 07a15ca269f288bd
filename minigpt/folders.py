"""Folders a command makes for its output: made with their missing parents, and on failure removed again, only
those it made and only while empty, so that a failed command leaves no trace and touches nothing of anyone else's."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from minigpt.errors import MiniGPTError


def first_missing(path: Path) -> Path | None:
    """The topmost ancestor of `path` (or `path` itself) that does not exist yet: what making `path` creates."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def dangling_link(path: Path) -> str | None:
    """"LINK is a link to TARGET, which does not exist" (or "LINK is a loop of links") if a missing part of `path`
    is a link to nothing: making `path` would create the link's target (maybe on another disk, or in a mount point
    not mounted), so commands refuse it; else None."""
    part, loop = path, None
    while part != part.parent:
        problem = _lookup_error(part)
        if problem == errno.ELOOP:
            loop = part  # the outermost part the loop shows in is the link that closes it
        elif loop is not None:
            return f"{str(loop)!r} is a loop of links"
        elif problem != errno.ENOENT:
            return None
        else:
            with contextlib.suppress(OSError):  # not a link (or no longer there): look further up
                return f"{str(part)!r} is a link to {os.readlink(part)!r}, which does not exist"
        part = part.parent
    return f"{str(loop)!r} is a loop of links" if loop is not None else None


def _lookup_error(path: Path) -> int | None:
    """The errno of looking `path` up, its links followed (None: it is there)."""
    try:
        os.stat(path)
    except OSError as err:
        return err.errno
    except ValueError:  # a NUL in the name: not a link's doing
        return errno.EINVAL
    return None


def refuse_dangling_link(path: Path, doing: str) -> None:
    """Raise `MiniGPTError` ("`doing` 'PATH': ...; pass a folder") if making `path` goes through a link to nothing."""
    if (link := dangling_link(path)) is not None:
        raise MiniGPTError(f"{doing} {str(path)!r}: {link}; pass a folder")


def remove_made(path: Path, made: Path | None) -> None:
    """Remove `path` and its parents up to `made` (as `first_missing` gave it before they were made) while they are
    empty. A folder that was never made (its making failed part way) is passed over for its parent."""
    if made is None:
        return
    folder = path
    while True:
        try:
            folder.rmdir()
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENAMETOOLONG):  # not empty: someone's files are in it
                return
        if folder == made:
            return
        folder = folder.parent
