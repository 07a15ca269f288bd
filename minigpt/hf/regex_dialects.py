"""Split patterns between two regex dialects: fancy-regex (tiktoken's) and Oniguruma in its Ruby syntax
(Hugging Face tokenizers'), which read the same text differently.

fancy-regex reads `$`/`^` as ends of the text and `X{n,m}+` as possessive; Oniguruma reads them as ends of a line
and as `(X{n,m})+`. Each direction rewrites those, so a pattern keeps its meaning in the other engine. Two more
differences are not rewritten but named (`oniguruma_only`): Ruby's inline option `(?m)` makes `.` match newlines
(fancy-regex's `(?m)` is about `^`/`$`); POSIX classes such as `[[:alpha:]]` take every script in Oniguruma but
only ASCII in fancy-regex; `\w` (and `\W`, `\b`, `\B`) differ on eight characters; `\Z` matches before one final
newline in Oniguruma, before any number of them in fancy-regex.
"""

from __future__ import annotations

import re

_INTERVAL = re.compile(r"\{\d+(?:,\d*)?\}")
_TO_ONIG = {"$": r"\z", "^": r"\A"}, "(?>{})"
_FROM_ONIG = {"$": r"(?:(?=\n)|\z)", "^": r"(?:(?<=\n)|\A)"}, "(?:{})+"


def to_oniguruma(pattern: str) -> str:
    """What fancy-regex `pattern` means, written for Oniguruma."""
    return _rewrite(pattern, *_TO_ONIG)


def from_oniguruma(pattern: str) -> str:
    """What Oniguruma `pattern` means, written for fancy-regex."""
    return _rewrite(pattern, *_FROM_ONIG)


_INLINE_OPTIONS = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?[:)]")
_POSIX_CLASS = re.compile(r"\[:\^?[a-z]+:\]")
_WORD = "the two engines disagree on ² ³ ¹ ¼ ½ ¾ and the zero-width joiners"
_ESCAPES_READ_OTHERWISE = {
    "w": _WORD, "W": _WORD, "b": _WORD, "B": _WORD,
    "Z": "Hugging Face's matches before one final newline, tiktoken's before any number of them",
}  # fmt: skip
_WORD_IN_CLASS = re.compile(r"(?<!\\)(\\[wW])")


def oniguruma_only(pattern: str) -> str | None:
    """The first part of Oniguruma `pattern` that fancy-regex would read differently and that no rewrite fixes
    (an inline option other than `i`, a POSIX class, `\\w` `\\W` `\\b` `\\B` `\\Z`), or None."""
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            if pattern[i + 1 : i + 2] in _ESCAPES_READ_OTHERWISE:
                return f"\\{pattern[i + 1]} ({_ESCAPES_READ_OTHERWISE[pattern[i + 1]]})"
            i += 2
            continue
        if pattern[i] == "[":
            end = _class_end(pattern, i)
            if posix := _POSIX_CLASS.search(pattern, i + 1, end):
                return f"the POSIX class {posix.group()} (every script in Hugging Face's engine, only ASCII in tiktoken's)"
            if word := _WORD_IN_CLASS.search(pattern, i + 1, end):
                return f"{word.group(1)} ({_ESCAPES_READ_OTHERWISE[word.group(1)[1]]})"
            i = end
            continue
        option = _INLINE_OPTIONS.match(pattern, i)
        if option and set(option.group(1) + (option.group(2) or "")) - {"i"}:
            return f"the inline option {option.group()} (Ruby's (?m) makes . match newlines; tiktoken's engine reads it otherwise)"
        i += 1
    return None


def _rewrite(pattern: str, anchors: dict[str, str], interval_plus: str) -> str:
    """`pattern` with each `^`/`$` outside a class replaced from `anchors`, and each `X{n,m}+` (an atom then an
    interval then `+`) written as `interval_plus.format("X{n,m}")`: what one regex engine means, for the other."""
    out: list[str] = []  # one entry per atom, so that an interval can take the atom before it
    groups: list[int] = []  # where in `out` each open group starts
    i = 0
    while i < len(pattern):
        char, end = pattern[i], i + 1
        if char == "\\":
            brace = pattern[i + 1 : i + 3] in ("p{", "P{", "x{")
            end = (pattern.find("}", i) + 1 or len(pattern)) if brace else i + 2
            out.append(pattern[i:end])
        elif char == "[":
            end = _class_end(pattern, i)
            out.append(pattern[i:end])
        elif char == "(":
            groups.append(len(out))
            out.append(char)
        elif char == ")" and groups:
            start = groups.pop()
            out[start:] = ["".join(out[start:]) + char]
        elif char == "{" and out and (interval := _INTERVAL.match(pattern, i)):
            end = interval.end()
            if pattern.startswith("+", end):
                out[-1], end = interval_plus.format(out[-1] + interval.group()), end + 1
            else:
                out[-1] += interval.group()
        else:
            out.append(anchors.get(char, char))
        i = end
    return "".join(out)


def _class_end(pattern: str, start: int) -> int:
    """The index just past the character class opening at `start` (classes may nest; `]` first is literal)."""
    depth, i = 0, start
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == "[":
            depth += 1
            i += 1
            i += pattern.startswith("^", i)
            i += pattern.startswith("]", i)
            continue
        if pattern[i] == "]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(pattern)  # unterminated: the regex engine reports it
