"""Split patterns moved between fancy-regex (tiktoken) and Oniguruma (Hugging Face tokenizers) keep their meaning."""

import pytest

from minigpt.hf.regex_dialects import from_oniguruma, oniguruma_only, to_oniguruma
from minigpt.tokenizer import GPT2_PATTERN


def test_text_anchors_and_possessive_intervals_are_spelled_for_oniguruma() -> None:
    assert to_oniguruma(r"^\d{1,3}+$") == r"\A(?>\d{1,3})\z"


def test_line_anchors_and_repeated_intervals_are_spelled_for_fancy_regex() -> None:
    assert from_oniguruma(r"^\d{1,3}+$") == r"(?:(?<=\n)|\A)(?:\d{1,3})+(?:(?=\n)|\z)"


def test_anchors_inside_a_character_class_are_left_alone() -> None:
    assert to_oniguruma(r"[^$]+") == r"[^$]+"


def test_gpt2s_pattern_needs_no_rewriting() -> None:
    assert to_oniguruma(GPT2_PATTERN) == from_oniguruma(GPT2_PATTERN) == GPT2_PATTERN


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        (r"(?m)\S+.?|\s", "(?m)"), (r"(?x)a b", "(?x)"), (r"(?mi:a)|b", "(?mi:"), (r"[[:alpha:]]+|\S", "[:alpha:]"),
        (r"[^[:space:]]+", "[:space:]"), (r"(?i:'s|'t)|\p{L}+", None), (r"(?:a)|(?=b)|(?<n>c)|(?<=d)e|\(\?m\)", None),
        (r"[\[:alpha:\]]", None), (r"\w+|[^\w\s]+|\s+", "\\w"), (r"\S+\Z|\S", "\\Z"), (r"\bx", "\\b"),
        (r"[\\w]|\\w", None),
    ],
)  # fmt: skip
def test_what_fancy_regex_reads_otherwise_and_no_rewrite_fixes_is_named(pattern, named):
    found = oniguruma_only(pattern)
    assert (found is None) if named is None else (named in found)
