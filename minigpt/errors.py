"""The exceptions meant for users: the CLI prints each as one line instead of a traceback."""

import errno
import os


class MiniGPTError(Exception):
    """A problem with the user's input (arguments, files, data, disk) that they can fix: exit code 2.

    The message names the problem and the fix in one line; anything else raised is a bug.
    """


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""The errnos of a write refused for want of space: the disk's, or the user's quota."""


class DiskFull(MiniGPTError):
    """No space left while writing a file: the message names it and whether the previous one there is kept; the
    caller adds what else is saved."""


USER_ERROR_EXIT = 2
"""The exit code of a `MiniGPTError`."""

NOT_FINITE = "the model's output is not finite (NaN or inf): its weights are broken; use another checkpoint"
"""What sampling, scoring and attention say of a model whose output is NaN or inf (never a NaN result)."""


class Interrupted(KeyboardInterrupt):
    """A command stopped by Ctrl-C or SIGTERM after saving its state; the message says how to continue. A
    `KeyboardInterrupt`, so that a notebook's ``except Exception`` (a loop over settings) does not go on past
    the user's Ctrl-C."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


class ReportedByRankZero(Exception):
    """A stop that every process of a distributed run meets alike (an interruption, a divergence, a bad
    argument): global rank 0 tells the user, and this process only exits with `code`."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exit {code}")
        self.code = code


def check_lookup(path: str | os.PathLike[str], used_as: str, hint: str) -> None:
    """A path the file system refuses to look up (a name too long, a loop of links, a file where a folder
    should be) as one line: "cannot use PATH as `used_as` (reason): `hint`"; a path that does not exist is left
    to the caller to explain."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as err:
        shown = os.fspath(path) if len(os.fspath(path)) <= 80 else os.fspath(path)[:77] + "..."
        raise MiniGPTError(f"cannot use {shown} as {used_as} ({err.strerror or err}): {hint}") from None
