"""tokenizer.json read field by field: the layout the tokenizers trainer writes when given special tokens (them
first) loads with transformers' ids, and a field of the wrong type or shape is one line naming file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import ByteLevelBPETokenizer, Tokenizer
from transformers import AutoTokenizer

from minigpt import tokenizer as tok
from minigpt.errors import MiniGPTError
from minigpt.hf.tokenizer import load, save
from tests.helpers import edited

TEXTS = [
    "Hello, world! Don't panic: it's 42 , not 7 . THEY'LL see",
    "Привет, как дела? Съешь же ещё этих мягких французских булок.",
    "Tiếng Việt có dấu: Xin chào các bạn, hôm nay trời đẹp quá.",
    "漢字かな交じり文，中文标点。 emoji 🙂🚀👩‍👩‍👧 done",
    "digits 1234567890 and 2024-01-31\n\n\ttabs\t\tand\r\nwindows lines  ",
    f"a literal {tok.EOT} in the text",
    "",
]
TRAINING_TEXT = [" ".join(TEXTS) * 20, "plain english words " * 50, "12 34 56 78 90 " * 50]


@pytest.fixture(scope="module")
def specials_first() -> Tokenizer:
    """A byte-level BPE as the tokenizers trainer numbers it when given special tokens: <|endoftext|> is id 0."""
    trained = ByteLevelBPETokenizer()
    trained.train_from_iterator(TRAINING_TEXT, vocab_size=320, special_tokens=[tok.EOT], show_progress=False)
    return trained._tokenizer


@pytest.fixture(scope="module")
def hf_json(specials_first) -> dict:
    return json.loads(specials_first.to_str())


@pytest.fixture
def folder(hf_json, tmp_path) -> Path:
    (tmp_path / "tokenizer.json").write_text(json.dumps(hf_json))
    return tmp_path


def ids_of(encode) -> list[list[int]]:
    return [list(encode(text)) for text in TEXTS if tok.EOT not in text]  # HF matches specials in text; minigpt not


def test_special_tokens_numbered_first_load_with_the_hf_ids(specials_first, folder):
    enc = load(folder)
    assert tok.eot_id(enc) == specials_first.token_to_id(tok.EOT) == 0
    assert enc.n_vocab == specials_first.get_vocab_size()
    assert ids_of(lambda text: tok.encode(enc, text)) == ids_of(lambda text: specials_first.encode(text).ids)
    hf = AutoTokenizer.from_pretrained(folder)
    assert ids_of(lambda text: tok.encode(enc, text)) == ids_of(hf.encode)
    assert [enc.decode(tok.encode(enc, text)) for text in TEXTS] == TEXTS


def test_special_tokens_numbered_first_survive_a_checkpoint_record_and_a_shard_file(folder, tmp_path):
    enc = load(folder)
    for again in (tok.from_dict(tok.to_dict(enc)), _saved_and_loaded(enc, tmp_path / "tokenizer.json")):
        assert again._mergeable_ranks == enc._mergeable_ranks and again._special_tokens == enc._special_tokens
    assert tok.digest(tok.from_dict(tok.to_dict(enc))) == tok.digest(enc)


def _saved_and_loaded(enc, path: Path):
    tok.save(enc, path)
    return tok.load(path)


def test_special_tokens_numbered_first_export_with_the_same_ids(specials_first, folder, tmp_path):
    save(load(folder), tmp_path / "again")
    again = AutoTokenizer.from_pretrained(tmp_path / "again")
    assert ids_of(again.encode) == ids_of(lambda text: specials_first.encode(text).ids)
    assert again.eos_token_id == 0


def test_a_record_with_specials_among_the_ids_numbers_the_ordinary_tokens_around_them():
    record = tok.to_dict(tok.byte_tokenizer()) | {"special_tokens": {tok.EOT: 3}}
    enc = tok.from_dict(record)
    assert enc.encode_single_token(tok.EOT) == 3
    assert [enc.encode_single_token(bytes([b])) for b in (0, 2, 3, 255)] == [0, 2, 4, 256]
    assert tok.from_dict(tok.to_dict(enc))._mergeable_ranks == enc._mergeable_ranks


@pytest.mark.parametrize("ids", [{tok.EOT: -1}, {tok.EOT: 0, "<|x|>": 0}, {tok.EOT: 2**31}])
def test_a_record_whose_special_ids_repeat_or_fall_outside_int32_is_refused(ids):
    with pytest.raises(ValueError, match="distinct and from 0"):
        tok.from_dict(tok.to_dict(tok.byte_tokenizer()) | {"special_tokens": ids})


def test_unused_ids_are_the_gaps_among_specials_and_the_rows_past_the_tokenizer():
    """cl100k_base's layout: ordinary tokens first, then specials with unused ids among them."""
    enc = tok.from_dict(tok.to_dict(tok.byte_tokenizer()) | {"special_tokens": {tok.EOT: 257, "<|x|>": 260}})
    assert enc.n_vocab == 261 and enc.encode_single_token(tok.EOT) == 257
    assert tok.unused_ids(enc, 263) == [256, 258, 259, 261, 262]
    assert tok.unused_ids(tok.byte_tokenizer(), 257) == []



def split_step(pattern) -> dict:
    """A pre-tokenizer that splits with `pattern` (a field of any type), then applies ByteLevel."""
    split = {"type": "Split", "pattern": pattern, "behavior": "Isolated", "invert": False}
    return {"type": "Sequence", "pretokenizers": [split, {"type": "ByteLevel", "use_regex": False}]}


MALFORMED = {
    "no_pretokenizers": ("pre_tokenizer", {"type": "Sequence", "pretokenizers": []}, "pre-tokenize with ByteLevel"),
    "three_pretokenizers": ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [{}, {}, {}]}, "ByteLevel"),
    "pretokenizers_not_a_list": ("pre_tokenizer", {"type": "Sequence", "pretokenizers": "x"}, "pretokenizers must be list"),
    "pretokenizer_not_an_object": ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [1, 2]}, "ByteLevel"),
    "pre_tokenizer_a_number": ("pre_tokenizer", 3, "pre_tokenizer must be dict"),
    "pre_tokenizer_without_type": ("pre_tokenizer", {}, "type must be str"),
    "split_pattern_not_a_string": ("pre_tokenizer", split_step({"Regex": 5}), "Regex must be str"),
    "split_pattern_a_string": ("pre_tokenizer", split_step("x"), "pattern must be dict"),
    "use_regex_a_string": ("pre_tokenizer.use_regex", "yes", "use_regex must be bool"),
    "model_a_list": ("model", [], "model must be dict"),
    "model_type_a_number": ("model.type", 5, "type must be str"),
    "vocab_a_list": ("model.vocab", [], "vocab must be dict"),
    "merges_an_object": ("model.merges", {}, "merges must be list"),
    "merge_a_number": ("model.merges", [1], "merge 1 must be a string or a list"),
    "dropout_a_string": ("model.dropout", "0.1", "dropout must be"),
    "added_tokens_an_object": ("added_tokens", {}, "added_tokens must be list"),
    "added_token_a_string": ("added_tokens", ["x"], "added_tokens\\[0\\]"),
    "added_token_id_a_string": ("added_tokens.0.id", "0", "id must be int"),
    "added_token_id_a_bool": ("added_tokens.0.id", False, "id must be int"),
    "added_token_special_missing": ("added_tokens.0.special", None, "special must be bool"),
    "normalizer_a_string": ("normalizer", "x", "normalizer must be dict"),
    "normalizers_not_a_list": ("normalizer", {"type": "Sequence", "normalizers": 3}, "normalizers must be list"),
    "decoder_a_number": ("decoder", 3, "decoder must be dict"),
    "post_processor_without_type": ("post_processor", {}, "type must be str"),
    "vocab_id_a_string": ("model.vocab.a", "1", "not byte-level"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_field_is_one_line_naming_the_file_and_key(case, hf_json, tmp_path):
    path, value, message = MALFORMED[case]
    (tmp_path / "tokenizer.json").write_text(json.dumps(edited(hf_json, path, value)))
    with pytest.raises(MiniGPTError, match=message) as err:
        load(tmp_path)
    assert "\n" not in str(err.value) and "tokenizer.json" in str(err.value)


def test_a_deeply_nested_tokenizer_json_is_one_line(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(MiniGPTError, match="nested too deeply") as err:
        load(tmp_path)
    assert "\n" not in str(err.value)


def test_a_vocab_json_that_is_not_an_object_is_one_line(tmp_path):
    (tmp_path / "vocab.json").write_text("[1, 2]")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(MiniGPTError, match="vocab.json is not a JSON object"):
        load(tmp_path)
