"""Run folders: one training process per folder at a time, and nothing left behind by a run that saved nothing.

A claimed folder holds a ``.lock`` file locked with ``flock``: the kernel releases it when its process
dies (even by ``kill -9``), so a stale lock can never block a folder. A folder "holds a run" once it has a
checkpoint; a ``config.yaml`` or TensorBoard files without one are leftovers of a run that failed before
saving anything, and are cleared when such a run ends or the folder is claimed afresh. Files of those names
that no run wrote (a user's own ``README.md`` in the folder given as ``--out_dir``) are never touched: such a
folder is refused.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from types import TracebackType

from minigpt.checkpoint import TEMP_GLOB
from minigpt.errors import MiniGPTError
from minigpt.folders import dangling_link, first_missing, remove_made

LOCK_NAME = ".lock"
CHECKPOINTS = ("last.ckpt", "best.ckpt")
LEFTOVERS = ("config.yaml", "tb", "metrics.csv", "loss.png", "README.md")  # what a run may write besides checkpoints


def holds_run(folder: Path) -> bool:
    """True when `folder` holds a checkpoint of a run."""
    return any((folder / name).exists() for name in CHECKPOINTS)


class InUse(MiniGPTError):
    """Another live process holds the folder's lock."""


class RunFolder:
    """An exclusive claim on a run folder (see the module docstring): `acquire()`, then use it as a context
    manager whose exit releases it.

    Acquiring creates the folder if needed, takes the lock and removes temporary files that a killed
    checkpoint write left. Releasing drops the lock; when the folder holds no checkpoint, it also removes
    what the run wrote, and the folder itself if acquiring created it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._created: Path | None = None  # the topmost folder acquiring had to create
        self.others: list[str] = []
        """Names a run writes (`LEFTOVERS`) that were in the folder when it was acquired and that no run of
        minigpt left: someone else's files, which a run must not overwrite nor a release remove."""

    def acquire(self) -> RunFolder:
        """Create and lock the folder; `InUse` if another process holds it, `MiniGPTError` if it is unusable."""
        if (link := dangling_link(self.path)) is not None:
            raise MiniGPTError(f"cannot use {self.path} as the run folder ({link}): choose another --out_dir")
        try:
            self._created = first_missing(self.path)
            self.path.mkdir(parents=True, exist_ok=True)
            killed_run_was_here = _is_run_lock(self.path / LOCK_NAME)  # a live run's lock makes _lock refuse
            self._lock()
        except InUse:
            self._remove_created()
            raise
        except OSError as err:
            self._remove_created()
            raise MiniGPTError(
                f"cannot use {self.path} as the run folder ({err.strerror or err}): choose another --out_dir"
            ) from None
        for stale in self.path.glob(TEMP_GLOB):
            stale.unlink(missing_ok=True)
        if not killed_run_was_here and not holds_run(self.path):
            self.others = sorted(name for name in LEFTOVERS if os.path.lexists(self.path / name))
        return self

    def release(self) -> None:
        """Unlock; clear what a run that saved no checkpoint left (see the class docstring)."""
        if not holds_run(self.path) and not self.others:
            self.clear_leftovers()
        self._unlock()
        if not holds_run(self.path):
            self._remove_created()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def check_resumable(self) -> None:
        """Before a resume trains: each file a run writes is of the kind it writes (``tb`` a folder, the rest
        files) and can be written (not immutable: see `_unwritable`), so that no step is trained only to fail at
        its save. A file's link to nothing is replaced as the file is; ``tb``'s cannot be written through."""
        for name in (*LEFTOVERS, *CHECKPOINTS):
            path, folder = self.path / name, name == "tb"
            if not os.path.lexists(path) or (not path.exists() and not folder):
                continue
            if not path.exists():
                problem = "is a link to nothing"
            elif path.is_dir() != folder:
                problem = f"is {'a file' if folder else 'a folder'}"
            elif (refused := _unwritable(path)) is not None:
                problem = f"cannot be written ({refused})"
            else:
                continue
            raise MiniGPTError(
                f"cannot resume in {str(self.path)!r}: its {name} {problem}, where the run writes its own; move it "
                "away (or make it writable), then resume again"
            )

    def clear_leftovers(self) -> None:
        """Remove a config and logs that no checkpoint goes with."""
        for name in LEFTOVERS:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    def _lock(self) -> None:
        lock = self.path / LOCK_NAME
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read(fd)
                os.close(fd)
                raise InUse(
                    f"{self.path} is in use by another training run ({owner or 'unknown process'}); "
                    "wait for it to end or choose another --out_dir"
                ) from None
            # The previous owner unlinks the file as it leaves: if it did so after we opened it, retry.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is None:
            return
        (self.path / LOCK_NAME).unlink(missing_ok=True)
        os.close(self._lock_fd)  # closing releases the flock
        self._lock_fd = None

    def _remove_created(self) -> None:
        """Remove the folders entering created, if they are empty (nothing of anyone else's is touched)."""
        remove_made(self.path, self._created)


def _unwritable(path: Path) -> str | None:
    """Why the folder `path` cannot be written in, or the file `path` cannot be replaced (immutable: refused to root
    too), or None; nothing changes. A file's mode does not matter: a run replaces its files by renaming."""
    try:
        if path.is_dir():
            tempfile.TemporaryFile(dir=path).close()
        else:
            open(path, "r+b").close()  # noqa: SIM115 - opened only to learn whether it may be
    except OSError as err:
        if path.is_dir() or err.errno == errno.EPERM:
            return err.strerror or type(err).__name__
    return None


def _is_run_lock(path: Path) -> bool:
    """Whether `path` is the lock file of a minigpt run ("pid N on HOST"); a `.lock` of another tool's, or an
    empty one, says nothing of the files beside it."""
    if not path.is_file():  # reading a FIFO would block
        return False
    try:
        with path.open("rb") as file:
            return re.fullmatch(rb"pid \d+ on \S+\n", file.read(300)) is not None
    except OSError:
        return False


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""
