"""minigpt.hf.tokenizer against the real thing: transformers and tokenizers are imported here, never at run time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiktoken
from tokenizers import ByteLevelBPETokenizer, Tokenizer, models
from transformers import AutoTokenizer

from minigpt import tokenizer as tok
from minigpt.errors import MiniGPTError
from minigpt.hf.tokenizer import load, save
from tests.helpers import edited

TEXTS = [
    "Hello, world! Don't panic: it's 42 , not 7 . THEY'LL see",
    "Привет, как дела? Съешь же ещё этих мягких французских булок.",
    "Tiếng Việt có dấu: Xin chào các bạn, hôm nay trời đẹp quá.",
    "İstanbul'da ılık bir gün; Çağrı ğüşıöç.",
    "漢字かな交じり文，中文标点。",
    "emoji 🙂🚀👩‍👩‍👧 done",
    "digits 1234567890 and 2024-01-31",
    "abc xabc",
    "  leading spaces",
    "trailing spaces   ",
    "\n\n\nnewlines\n\n",
    "\ttabs\t\tand\r\nwindows lines",
    "no\u00a0break and ideographic\u3000spaces",
    "",
]
# Digit pairs become tokens, so splitting "1234567890" as 123|456|789|0 (tiktoken) or whole changes the ids.
TRAINING_TEXT = [" ".join(TEXTS) * 20, "plain english words " * 50, "12 34 56 78 90 " * 50]
# cl100k_base's split pattern (tiktoken_ext.openai_public); unlike its ranks it needs no download.
CL100K_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""


@pytest.fixture(scope="module")
def bpe() -> tiktoken.Encoding:
    return tok.build_tokenizer("bpe:300", TRAINING_TEXT)


@pytest.fixture(scope="module", params=["bytes", "bpe:300", "cl100k_pattern", "whole_piece", "gpt2", "cl100k_base"])
def enc(request, bpe) -> tiktoken.Encoding:
    if request.param == "bytes":
        return tok.byte_tokenizer()
    if request.param == "bpe:300":
        return bpe
    if request.param == "cl100k_pattern":
        # Oniguruma reads cl100k's possessive \p{N}{1,3}+ as (\p{N}{1,3})+: digit runs show the difference.
        ranks, specials = bpe._mergeable_ranks, bpe._special_tokens
        return tiktoken.Encoding(
            "cl100k_pattern", pat_str=CL100K_PATTERN, mergeable_ranks=ranks, special_tokens=specials
        )
    if request.param == "whole_piece":
        # "abc" is a token that no merge builds: tiktoken finds it only by looking a whole piece up.
        ranks = {**tok.byte_tokenizer()._mergeable_ranks, b"abc": 256}
        specials = {tok.EOT: 257}
        return tiktoken.Encoding(
            "whole_piece", pat_str=tok.GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=specials
        )
    try:
        return tok.build_tokenizer(request.param)
    except MiniGPTError:
        pytest.skip(f"tiktoken's {request.param} needs the network or a filled TIKTOKEN_CACHE_DIR")


@pytest.fixture(scope="module")
def saved(enc, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("saved")
    save(enc, folder)
    return folder


@pytest.fixture(scope="module")
def hf_bpe() -> Tokenizer:
    """A byte-level BPE trained by the tokenizers library, <|endoftext|> after the vocabulary as in GPT-2."""
    trained = ByteLevelBPETokenizer()
    trained.train_from_iterator(TRAINING_TEXT, vocab_size=400, show_progress=False)
    trained.add_special_tokens([tok.EOT])
    return trained._tokenizer


@pytest.fixture(scope="module")
def hf_json(hf_bpe) -> dict:
    return json.loads(hf_bpe.to_str())


def write_json(folder: Path, data: dict) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(data))
    return folder


def ids_of(encode, texts=TEXTS) -> dict[str, list[int]]:
    return {text: list(encode(text)) for text in texts}


def test_saved_tokenizer_gives_minigpt_ids_in_transformers(enc, saved):
    hf = AutoTokenizer.from_pretrained(saved)
    assert ids_of(hf.encode) == ids_of(lambda text: tok.encode(enc, text))


def test_saved_tokenizer_decodes_back_to_the_text_in_transformers(enc, saved):
    hf = AutoTokenizer.from_pretrained(saved)
    assert {text: hf.decode(tok.encode(enc, text)) for text in TEXTS} == {text: text for text in TEXTS}


def test_saved_tokenizer_names_endoftext_as_its_special_tokens(enc, saved):
    hf = AutoTokenizer.from_pretrained(saved)
    assert hf.eos_token_id == hf.bos_token_id == tok.eot_id(enc)


def test_saved_tokenizer_loads_back_with_the_same_ranks_and_ids(enc, saved):
    loaded = load(saved)
    assert loaded._mergeable_ranks == enc._mergeable_ranks
    assert loaded._special_tokens == enc._special_tokens
    assert ids_of(lambda text: tok.encode(loaded, text)) == ids_of(lambda text: tok.encode(enc, text))


def test_tokenizer_json_loads_with_the_hf_ids(hf_bpe, hf_json, tmp_path):
    loaded = load(write_json(tmp_path, hf_json))
    assert ids_of(lambda text: tok.encode(loaded, text)) == ids_of(lambda text: hf_bpe.encode(text).ids)
    assert tok.eot_id(loaded) == hf_bpe.token_to_id(tok.EOT)


def test_vocab_and_merges_load_with_the_hf_ids(hf_bpe, tmp_path):
    hf_bpe.model.save(str(tmp_path))
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    # GPT-2's vocab.json holds <|endoftext|> itself; the tokenizers library keeps it with the added tokens.
    (tmp_path / "vocab.json").write_text(json.dumps({**vocab, tok.EOT: hf_bpe.token_to_id(tok.EOT)}))
    loaded = load(tmp_path)
    assert ids_of(lambda text: tok.encode(loaded, text)) == ids_of(lambda text: hf_bpe.encode(text).ids)


def test_split_regex_loads_with_the_hf_ids_where_the_regex_engines_differ(hf_json, tmp_path):
    # Oniguruma reads `$` as the end of a line and `\p{N}{1,3}+` as (\p{N}{1,3})+; tiktoken's engine does not.
    data = split_pattern(hf_json, CL100K_PATTERN.replace(r"\s++$", r"\s+$"))
    hf = Tokenizer.from_str(json.dumps(data))
    loaded = load(write_json(tmp_path, data))
    texts = [*TEXTS, "x  \n\n y"]  # Oniguruma: "  \n", "\n"; tiktoken's engine: "  \n\n"
    assert ids_of(lambda text: tok.encode(loaded, text), texts) == ids_of(lambda text: hf.encode(text).ids, texts)


def test_loaded_hf_tokenizer_saved_again_keeps_its_ids_in_transformers(hf_bpe, hf_json, tmp_path):
    save(load(write_json(tmp_path / "hf", hf_json)), tmp_path / "again")
    again = AutoTokenizer.from_pretrained(tmp_path / "again")
    assert ids_of(again.encode) == ids_of(lambda text: hf_bpe.encode(text).ids)


def test_saving_a_tokenizer_without_endoftext_is_refused(tmp_path):
    ranks = {bytes([b]): b for b in range(256)}
    with pytest.raises(MiniGPTError, match="no <\\|endoftext\\|> token"):
        save(tiktoken.Encoding("plain", pat_str=tok.GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={}), tmp_path)



def swapped_merges(hf_json: dict) -> dict:
    merges = hf_json["model"]["merges"]
    return edited(hf_json, "model.merges", [merges[1], merges[0], *merges[2:]])


def merge_unlike_tiktoken(hf_json: dict) -> dict:
    """b+c is merged before a+b, so tiktoken builds "abc" as a + bc, where the merges say ab + c."""
    vocab = {text: i for text, i in hf_json["model"]["vocab"].items() if len(text) == 1}
    vocab.update({"bc": 256, "ab": 257, "abc": 258})
    data = edited(hf_json, "model.vocab", vocab)
    data = edited(data, "model.merges", [["b", "c"], ["a", "b"], ["ab", "c"]])
    return edited(data, "added_tokens.0.id", 259)


def split_pattern(hf_json: dict, pattern: str) -> dict:
    """`hf_json` splitting with the regex `pattern` before its ByteLevel step, as minigpt's export writes it."""
    split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    return edited(hf_json, "pre_tokenizer", {"type": "Sequence", "pretokenizers": [split, byte_level]})


def gap_before_specials(hf_json: dict) -> dict:
    """<|endoftext|> numbered 1000 after fewer ordinary tokens: the ids in between are no token at all."""
    data = edited(hf_json, "added_tokens.0.id", 1000)
    if tok.EOT in data["model"]["vocab"]:
        data["model"]["vocab"][tok.EOT] = 1000
    return data


def word_piece(hf_json: dict) -> dict:
    return json.loads(Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]")).to_str())


REFUSALS = {
    "wordpiece": (word_piece, "WordPiece model"),
    "byte_fallback": (lambda data: edited(data, "model.byte_fallback", True), "SentencePiece-style"),
    "lowercase": (lambda data: edited(data, "normalizer", {"type": "Lowercase"}), "Lowercase normalizer"),
    "prefix_space": (lambda data: edited(data, "pre_tokenizer.add_prefix_space", True), "add_prefix_space"),
    "no_endoftext": (lambda data: edited(data, "added_tokens", []), "no special <\\|endoftext\\|>"),
    "non_special_added": (lambda data: edited(data, "added_tokens.0.special", False), "non-special token"),
    "backtracking_pattern": (lambda data: split_pattern(data, r"((a+)+)+(?=b)|\S|\s"), "backtracks too much"),
    "empty_pattern": (lambda data: split_pattern(data, ""), "split pattern is empty"),
    "pattern_dropping_text": (lambda data: split_pattern(data, "a"), "split pattern drops text"),
    # Hugging Face's engine (Oniguruma, Ruby syntax) reads these otherwise than tiktoken's: other ids, silently
    "ruby_dotall_option": (lambda data: split_pattern(data, r"(?m)\S+.?|\s"), "the inline option \\(\\?m\\)"),
    "posix_class": (lambda data: split_pattern(data, r"[[:alpha:]]+|[^[:alpha:]]+"), "the POSIX class \\[:alpha:\\]"),
    "end_before_final_newlines": (lambda data: split_pattern(data, r"\S+\Z|\S|\s"), "uses \\\\Z \\(Hugging Face's"),
    "word_class": (lambda data: split_pattern(data, r"\w+|[^\w\s]+|\s+"), "uses \\\\w \\(the two engines disagree"),
    "gap_before_specials": (gap_before_specials, "a gap of unused ids"),
    "merges_out_of_order": (swapped_merges, "ids that grow with merges"),
    "merge_unlike_tiktoken": (merge_unlike_tiktoken, "tiktoken would build 'abc'"),
    "missing_model": (lambda data: {k: v for k, v in data.items() if k != "model"}, "model must be dict"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_tokenizer_json_that_tiktoken_cannot_reproduce_is_refused_in_one_line(case, hf_json, tmp_path):
    make, message = REFUSALS[case]
    with pytest.raises(MiniGPTError, match=message) as err:
        load(write_json(tmp_path, make(hf_json)))
    assert "\n" not in str(err.value) and "tokenizer.json" in str(err.value)


def test_corrupt_tokenizer_json_is_refused_in_one_line(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE"')
    with pytest.raises(MiniGPTError, match="cannot read .*tokenizer.json") as err:
        load(tmp_path)
    assert "\n" not in str(err.value)


def test_folder_without_tokenizer_files_is_refused(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")  # merges.txt is missing
    with pytest.raises(MiniGPTError, match="no tokenizer.json, nor vocab.json and merges.txt"):
        load(tmp_path)
