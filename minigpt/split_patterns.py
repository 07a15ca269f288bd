"""Checking a tokenizer's split pattern before trusting it: a pattern read from a file decides every id.

A byte-level BPE is lossless only if its split pattern cuts the text into pieces that cover every character.
tiktoken trusts the pattern: one that skips characters silently drops text (``a`` encodes "banana cab" as
"aaaa"), one that matches empty text makes its encoder panic, and one that backtracks catastrophically makes
fancy-regex give up (its backtrack limit) on long runs of a character. `problem` tries a pattern on a probe
text of every kind of character, and runs of each, with a throwaway 257-token encoding, so nothing panics.
`safe_cut` finds where a long text may be cut, to be tokenized in pieces, without changing a token.
"""

from __future__ import annotations

import functools
import random
import re
import time

import regex  # tiktoken's own dependency: the dialect its split patterns are written in
import tiktoken

MAX_CHARS = 10_000
"""The longest pattern accepted: real ones (GPT-2's, cl100k's, o200k's) are a few hundred characters."""

_SAMPLES = [
    "Hello, world! Don't panic: it's 42 , not 7 . THEY'LL see",
    "Привет, как дела? Tiếng Việt có dấu. İstanbul'da ılık; Çağrı ğüşıöç.",
    "漢字かな交じり文，中文标点。 مرحبا بالعالم हिन्दी ภาษาไทย 한국어",
    "emoji 🙂🚀👩‍👩‍👧 done; digits 1234567890 and 2024-01-31, 3.14159",
    "  leading spaces\ttabs\t\tand\r\nwindows lines\n\n\nnewlines\n\n  trailing spaces   ",
    "no\u00a0break and ideographic\u3000spaces; quotes «» “” ‘’ and \\ back/slashes [brackets] {braces} <|x|>",
]
_RUN_CHARS = [chr(c) for c in range(0x20, 0x7F)] + list("\t\n\r\u00a0\u3000éяß漢字🙂٣")
# Runs long enough that a nested repetition (``(a+)+``) needs more than fancy-regex's backtrack limit of a
# million steps: such a pattern gives up from about 20 repeated characters on.
_RUN = 64
PROBE = "\n".join(_SAMPLES + [char * _RUN for char in _RUN_CHARS]) + "\n" + "".join(char * _RUN for char in _RUN_CHARS)
"""Letters, digits, spaces, punctuation, newlines and non-Latin scripts, then a run of each character alone on a
line and all the runs back to back: what a usable pattern must split and give back unchanged."""

_EMPTY = 256  # the probe encoding's token for an empty piece, so that an empty match shows instead of panicking


def problem(pattern: str) -> str | None:
    """Why `pattern` cannot split text for a byte-level tokenizer (a phrase to follow "its split pattern"), or
    None when it splits the probe text losslessly."""
    if len(pattern) > MAX_CHARS:
        return f"is {len(pattern):,} characters long, more than any real one ({MAX_CHARS:,})"
    if not pattern:
        return "is empty, so it matches no text"
    ranks = {bytes([b]): b for b in range(256)} | {b"": _EMPTY}
    try:
        probe = tiktoken.Encoding("probe", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    except ValueError as err:
        return f"is not a valid regular expression ({_first_line(err)})"
    for text in (PROBE, PROBE + "\n"):  # with a final newline too: `\Z` matches empty text only before one
        try:
            ids = _split(probe, text)
        except ValueError:  # tiktoken's encode (unlike encode_ordinary) reports the regex engine's errors
            return (
                "backtracks too much on a long run of one character (the regex engine gives up): it has a nested "
                "repetition like (a+)+"
            )
        if _EMPTY in ids:
            return "matches empty text, which tiktoken cannot encode"
        if probe.decode_bytes(ids) != text.encode():
            return f"drops text: it leaves {_dropped(probe)} out of every piece, so they are lost"
    return None


def _split(probe: tiktoken.Encoding, text: str) -> list[int]:
    return probe.encode(text, allowed_special=set(), disallowed_special=())


def _dropped(probe: tiktoken.Encoding) -> str:
    """Which text of the probe the pattern loses: a character that it loses standing alone, if any."""
    for char in dict.fromkeys(PROBE):
        if probe.decode_bytes(_split(probe, char)) != char.encode():
            return f"characters such as {char!r}"
    return "some characters next to others"


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


NEWLINE_CUT = r"\S\n(?=[^\s/])"
"""After a newline between two non-space characters, unless a slash follows (o200k's punctuation takes the newlines
and slashes after it: ".\n/")."""
SPACE_CUT = r"\S(?= )"
"""Before a space that follows a non-space character."""

_CUT_PROBE_TEXTS = 1000
_CUT_PROBE_SECONDS = 10.0  # a real pattern takes 0.2 s; one slow in this engine must not hold preparation up
# Every printable ASCII character (a pattern may single out any of them, "\\p{L}+: " a colon) and some beyond.
_CUT_PROBE_CHARS = [chr(c) for c in range(0x20, 0x7F)] + list("\n\r\t\u00a0\u3000éЖж漢字\u0301٣½²🙂")


@functools.lru_cache(maxsize=16)
def safe_cut(pattern: str) -> re.Pattern[str] | None:
    """Where text may be cut without changing the pieces `pattern` splits it into, so without changing a single
    token (tiktoken encodes each piece on its own): `NEWLINE_CUT`, `SPACE_CUT`, both or neither (None). A rule is
    kept when cutting 1,000 random short texts of spaces, newlines, letters, marks, digits and punctuation at
    every place it names gives the pieces of each text whole. GPT-2's, cl100k's, o200k's and rustbpe's patterns
    keep both."""
    deadline = time.monotonic() + _CUT_PROBE_SECONDS
    try:
        split = regex.compile(pattern)
        rules = [rule for rule in (NEWLINE_CUT, SPACE_CUT) if _keeps_pieces(split, re.compile(rule), deadline)]
    except (regex.error, TimeoutError):  # tiktoken's engine took it, but this one cannot tell (in time): never cut
        return None
    return re.compile("|".join(rules)) if rules else None


def _keeps_pieces(split: regex.Pattern, cut: re.Pattern[str], deadline: float) -> bool:
    rng = random.Random(0)
    weights = [8 if char in " \n" else 1 for char in _CUT_PROBE_CHARS]
    for _ in range(_CUT_PROBE_TEXTS):
        text = "".join(rng.choices(_CUT_PROBE_CHARS, weights, k=rng.randint(2, 80)))
        at = [0, *(match.end() for match in cut.finditer(text)), len(text)]
        cut_pieces = [piece for start, end in zip(at, at[1:]) for piece in _pieces(split, text[start:end], deadline)]
        if cut_pieces != _pieces(split, text, deadline):
            return False
    return True


def _pieces(split: regex.Pattern, text: str, deadline: float) -> list[str]:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return [match.group() for match in split.finditer(text, timeout=left)]
