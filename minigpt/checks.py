"""Checks of the values a Python caller hands the library, where any object can arrive: each returns the value
in its plain form or raises a one-line `MiniGPTError` naming the argument (the command's parsers check theirs)."""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Mapping

from minigpt.errors import MiniGPTError


def shown(value: object) -> str:
    """`value` for a one-line message: its repr cut short, a huge integer by its size."""
    if isinstance(value, int) and abs(value) >= 10**60:  # past 4,300 digits repr() refuses
        return f"a {value.bit_length()}-bit integer"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def text(value: object, what: str) -> str:
    """`value` if it is a str that is valid Unicode: a lone surrogate ("\\ud800") has no UTF-8 bytes, and the
    tokenizer would silently put U+FFFD in its place."""
    if not isinstance(value, str):
        raise MiniGPTError(f"the {what} must be a str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise MiniGPTError(
            f"the {what} is not valid Unicode: a lone surrogate {value[err.start]!r} at character {err.start}"
        ) from None
    return value


def scalar(value: object) -> object:
    """A one-element numpy or torch value (`np.float32(0.1)`, `torch.tensor(3)`) as the Python number it holds,
    anything else as it is. A float32 0.1 is 0.1, not 0.10000000149: the number the user wrote, as numpy shows it."""
    if getattr(value, "ndim", None) != 0 or not hasattr(value, "item"):
        return value
    number = value.item()
    if not isinstance(number, float):
        return number
    if type(value).__module__ == "torch":
        try:
            value = value.detach().cpu().numpy()
        except (TypeError, RuntimeError):  # bfloat16, which numpy has not
            return number
    return float(str(value)) if type(value).__module__ == "numpy" else number


def is_whole(value: object) -> bool:
    """Whether `value` is a whole number: an int or numpy's, never a bool (see `scalar` for torch's)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def is_real(value: object) -> bool:
    """Whether `value` is a real number: an int, a float or numpy's, never a bool (see `scalar` for torch's)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def whole_number(value: object, what: str, minimum: int = 1) -> int:
    """`value` as an int, at least `minimum`; numpy's and torch's integers count, a bool does not."""
    value = scalar(value)
    if not is_whole(value):
        raise MiniGPTError(f"{what} must be a whole number, got {shown(value)}")
    if value < minimum:
        raise MiniGPTError(f"{what} must be at least {minimum}, got {shown(value)}")
    if value >= 2**63:
        raise MiniGPTError(f"{what} must be below 2**63, got {shown(value)}")
    return int(value)


def real_number(value: object, what: str) -> float:
    """`value` as a float; numpy's and torch's numbers count, a bool does not (the range is the caller's to check)."""
    value = scalar(value)
    if not is_real(value):
        raise MiniGPTError(f"{what} must be a number, got {shown(value)}")
    try:
        return float(value)
    except OverflowError:  # an int past 1.8e308
        raise MiniGPTError(f"{what} must be a number a float can hold, got {shown(value)}") from None


def true_or_false(value: object, what: str) -> bool:
    """`value` as a bool: True, False, numpy's bools, or 1 and 0."""
    plain = scalar(value)
    if not isinstance(plain, numbers.Integral) or plain not in (0, 1):
        raise MiniGPTError(f"{what} must be True or False, got {shown(value)}")
    return bool(plain)


def path(value: object, what: str) -> str:
    """`value` as a path string: a str or an `os.PathLike` (a `pathlib.Path`)."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise MiniGPTError(f"the {what} must be a path (a str or pathlib.Path), got {shown(value)}")
    spelled = os.fspath(value)
    if not isinstance(spelled, str):
        raise MiniGPTError(f"the {what} must be a path as text, not bytes: got {shown(value)}")
    if "\0" in spelled:
        raise MiniGPTError(f"the {what} {shown(spelled)} holds a NUL character, which no file name can")
    try:
        os.fsencode(spelled)  # a byte that is not UTF-8 (surrogate-escaped) is a real name; a lone "\ud800" is not
    except UnicodeEncodeError as err:
        raise MiniGPTError(f"the {what} is not valid Unicode: a lone surrogate {spelled[err.start]!r} at character {err.start}") from None
    return spelled


def indices(value: object, what: str, count: int) -> list[int] | None:
    """`value`, whole numbers naming `what`s (layers, heads) from 0 to count - 1, in a list, tuple, range, set or 1-D
    numpy or torch array, as a list; None stays None (all)."""
    if value is None:
        return None
    if hasattr(value, "tolist") and getattr(value, "ndim", None) == 1:
        value = value.tolist()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable) or getattr(value, "ndim", 1) == 0:
        raise MiniGPTError(f"{what}s must be a list of whole numbers (or None for all), got {shown(value)}")
    chosen = [whole_number(i, f"each of {what}s", minimum=0) for i in value]
    if not chosen:
        raise MiniGPTError(f"{what}s is empty: choose at least one {what}, or None for all")
    bad = [i for i in chosen if i >= count]
    if bad:
        raise MiniGPTError(f"{what} {bad[0]} does not exist: the model has {count} {what}s, 0 to {count - 1}")
    return chosen
