"""Split patterns from files are checked before they are trusted: one that drops text, matches empty text,
backtracks catastrophically or does not compile is refused in one line when the tokenizer loads, from a
checkpoint's tokenizer record, a shard folder's tokenizer file or a Hugging Face folder."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import tiktoken

from minigpt import split_patterns
from minigpt import tokenizer as tok
from minigpt.errors import MiniGPTError
from minigpt.hf import export
from minigpt.jsonfile import read_object

# The attacker's patterns (test_hf_tokenizer tries them in Hugging Face files): fancy-regex gives up on ((a+)+)+ after about 20 a's; "" and a* match empty text (tiktoken
# panics on an empty piece); "a" skips every other character, so "banana cab" would encode as "aaaa".
BAD_PATTERNS = {
    "backtracking": (r"((a+)+)+(?=b)|\S|\s", "backtracks too much"),
    "empty": ("", "is empty"),
    "empty_matches": (r"a*|\S|\s", "matches empty text"),
    "empty_before_a_final_newline": (r"\Z|\S|\s", "matches empty text"),  # passed, then panicked on "hello\n"
    "drops_text": ("a", "drops text"),
    "uncompilable": ("(", "not a valid regular expression"),
    "huge": ("a|" * 20_000 + r"\S|\s", "more than any real one"),
}


def record(pattern: str) -> dict:
    return tok.to_dict(tok.byte_tokenizer()) | {"pattern": pattern}


def raw_encoding(pattern: str) -> tiktoken.Encoding:
    """An encoding with `pattern` built past every check, as if a check had missed it."""
    ranks = {bytes([b]): b for b in range(256)}
    return tiktoken.Encoding("raw", pat_str=pattern, mergeable_ranks=ranks, special_tokens={tok.EOT: 256})


@pytest.mark.parametrize("pattern", [tok.GPT2_PATTERN, r"\S+|\s+", r"\p{L}+|\p{N}{1,3}+|[^\p{L}\p{N}]"])
def test_patterns_that_cover_every_character_pass(pattern):
    assert split_patterns.problem(pattern) is None


def test_the_patterns_of_trained_vocabularies_pass():
    enc = tok.build_tokenizer("bpe:260", ["some training text, with words and 123 digits\n" * 50])
    assert split_patterns.problem(enc._pat_str) is None


@pytest.mark.parametrize("case", BAD_PATTERNS)
def test_a_bad_pattern_is_named_in_one_line_quickly(case):
    pattern, message = BAD_PATTERNS[case]
    start = time.perf_counter()
    problem = split_patterns.problem(pattern)
    assert time.perf_counter() - start < 2
    assert problem is not None and message in problem and "\n" not in problem


def test_a_pattern_that_drops_text_names_a_character_it_loses():
    assert "'b'" in split_patterns.problem("a|[^b]")


@pytest.mark.parametrize("case", BAD_PATTERNS)
def test_a_checkpoint_record_with_a_bad_pattern_is_refused(case):
    pattern, message = BAD_PATTERNS[case]
    with pytest.raises(ValueError, match=message) as err:
        tok.from_dict(record(pattern))
    assert "\n" not in str(err.value)


def test_a_shard_tokenizer_file_with_a_bad_pattern_is_refused(tmp_path):
    tok.save(tok.byte_tokenizer(), tmp_path / "tokenizer.json")
    data = read_object(tmp_path / "tokenizer.json", "test")
    (tmp_path / "tokenizer.json").write_text(json.dumps(data | {"pattern": "a"}))
    with pytest.raises(ValueError, match="drops text"):
        tok.load(tmp_path / "tokenizer.json")


@pytest.mark.parametrize(("pattern", "text"), [(r"((a+)+)+(?=b)|\S|\s", "a" * 40 + "c"), ("", "hello")])
def test_an_encode_that_fails_inside_tiktoken_is_a_user_error(pattern, text):
    enc = raw_encoding(pattern)
    with pytest.raises(MiniGPTError, match="split") as err:
        tok.encode(enc, text)
    assert "\n" not in str(err.value)
    with pytest.raises(MiniGPTError, match="split"):
        tok.encode_batch(enc, ["fine", text], threads=2)


def test_encoding_treats_special_tokens_as_text_and_matches_encode_ordinary():
    enc = tok.byte_tokenizer()
    text = f"a {tok.EOT} b " + "é漢🙂" * 10
    assert tok.encode(enc, text) == enc.encode_ordinary(text)
    assert tok.encode_batch(enc, [text, ""], threads=2) == [enc.encode_ordinary(text), []]


def test_generate_from_a_hugging_face_folder_with_a_bad_pattern_exits_2_in_one_line(tiny_checkpoint, tmp_path):
    folder = tmp_path / "hf"
    export.export(str(tiny_checkpoint), folder)
    data = read_object(folder / "tokenizer.json", "test")
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"((a+)+)+(?=b)|\S|\s"
    (folder / "tokenizer.json").write_text(json.dumps(data))
    done = subprocess.run(
        [sys.executable, "-m", "minigpt", "generate", "--ckpt", str(folder), "--prompt", "a" * 40 + "c"],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "backtracks too much" in done.stderr
