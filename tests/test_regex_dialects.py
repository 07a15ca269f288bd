"""Split patterns moved between fancy-regex (tiktoken) and Oniguruma (Hugging Face tokenizers) keep their meaning."""

from minigpt.hf.regex_dialects import from_oniguruma, to_oniguruma
from minigpt.tokenizer import GPT2_PATTERN


def test_text_anchors_and_possessive_intervals_are_spelled_for_oniguruma() -> None:
    assert to_oniguruma(r"^\d{1,3}+$") == r"\A(?>\d{1,3})\z"


def test_line_anchors_and_repeated_intervals_are_spelled_for_fancy_regex() -> None:
    assert from_oniguruma(r"^\d{1,3}+$") == r"(?:(?<=\n)|\A)(?:\d{1,3})+(?:(?=\n)|\z)"


def test_anchors_inside_a_character_class_are_left_alone() -> None:
    assert to_oniguruma(r"[^$]+") == r"[^$]+"


def test_gpt2s_pattern_needs_no_rewriting() -> None:
    assert to_oniguruma(GPT2_PATTERN) == from_oniguruma(GPT2_PATTERN) == GPT2_PATTERN
