import base64
import json
import random
from unittest import mock

import pytest
import regex
import tiktoken

from minigpt import split_patterns
from minigpt import tokenizer as tok
from minigpt.data.pieces import cut_at_lines
from minigpt.errors import MiniGPTError

SAMPLES = [
    "Hello, world! The quick brown fox.",
    "Привет, как дела? Съешь же ещё этих мягких французских булок.",
    "Tiếng Việt có dấu: Xin chào các bạn, hôm nay trời đẹp quá.",
    "İstanbul'da ılık bir gün; Çağrı ğüşıöç.",
    "emoji 🙂🚀👩‍👩‍👧 and CJK 漢字かな交じり文",
    "  leading spaces\n\n\ttabs and\r\nwindows newlines  ",
]
TRAINING_TEXT = ["".join(SAMPLES) * 20, "plain english words and more words " * 50]


@pytest.fixture(scope="module", params=["bytes", "bpe:400"])
def enc(request) -> tiktoken.Encoding:
    return tok.build_tokenizer(request.param, TRAINING_TEXT)


@pytest.mark.parametrize("text", SAMPLES)
def test_encode_then_decode_returns_the_text(enc, text):
    assert enc.decode(tok.encode(enc, text)) == text


def test_literal_special_token_is_encoded_as_ordinary_text(enc):
    text = "before <|endoftext|> after"
    ids = tok.encode(enc, text)
    assert tok.eot_id(enc) not in ids
    assert enc.decode(ids) == text


def test_vocab_sizes_include_endoftext():
    assert tok.byte_tokenizer().n_vocab == 257
    bpe = tok.build_tokenizer("bpe:400", TRAINING_TEXT)
    assert bpe.n_vocab == 400 and tok.eot_id(bpe) == 399


def test_bpe_compresses_better_than_bytes():
    text = " ".join(TRAINING_TEXT)
    bpe = tok.build_tokenizer("bpe:512", [text])
    assert len(tok.encode(bpe, text)) < 0.8 * len(text.encode())


def test_serialised_tokenizer_rebuilds_identically(enc):
    rebuilt = tok.from_dict(tok.to_dict(enc))
    for text in SAMPLES:
        assert tok.encode(rebuilt, text) == tok.encode(enc, text)
    assert rebuilt.n_vocab == enc.n_vocab and tok.eot_id(rebuilt) == tok.eot_id(enc)


def test_serialised_form_is_plain_data(enc):
    data = tok.to_dict(enc)
    assert isinstance(data["pattern"], str) and isinstance(data["special_tokens"], dict)
    assert all(isinstance(token, bytes) for token in data["ranks"])


@pytest.mark.parametrize("spec", ["nonsense", "bpe:abc", "bpe:100", "bpe:"])
def test_bad_tokenizer_specs_are_user_errors(spec):
    with pytest.raises(MiniGPTError, match="tokenizer"):
        tok.build_tokenizer(spec, TRAINING_TEXT)


def test_bpe_vocab_larger_than_the_text_supports_is_a_user_error():
    with pytest.raises(MiniGPTError, match="too small"):
        tok.build_tokenizer("bpe:5000", ["ab ab ab"])


def test_training_a_bpe_vocabulary_logs_nothing_at_info(caplog):
    """rustbpe logs its every merge at INFO, which the command shows: 'Finished training: 37 merges completed'."""
    with caplog.at_level("INFO"):
        tok.build_tokenizer("bpe:300", TRAINING_TEXT)
    assert [r.message for r in caplog.records if r.name.startswith("rustbpe")] == []


def test_pretrained_encoding_offline_is_a_user_error(monkeypatch):
    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(MiniGPTError, match="TIKTOKEN_CACHE_DIR"):
        tok.build_tokenizer("gpt2")



def test_the_digest_names_the_ids_not_the_name():
    enc = tok.byte_tokenizer()
    renamed = tiktoken.Encoding("other", pat_str=enc._pat_str, mergeable_ranks=enc._mergeable_ranks, special_tokens=enc._special_tokens)
    assert tok.digest(renamed) == tok.digest(enc) != tok.digest(tok.build_tokenizer("bpe:260", ["abc abd abe " * 40]))


def test_a_saved_tokenizer_file_loads_as_the_same_tokenizer(enc, tmp_path):
    tok.save(enc, tmp_path / "tokenizer.json")
    rebuilt = tok.load(tmp_path / "tokenizer.json")
    assert tok.digest(rebuilt) == tok.digest(enc) and rebuilt.name == enc.name


def test_a_tokenizer_file_is_json_with_base64_tokens(enc, tmp_path):
    """The format shard folders have held since before `save` existed, so their caches stay valid."""
    tok.save(enc, tmp_path / "tokenizer.json")
    record = json.loads((tmp_path / "tokenizer.json").read_text())
    assert [base64.b64decode(token) for token in record["ranks"]] == tok.to_dict(enc)["ranks"]


def test_a_byte_vocabulary_with_another_split_pattern_is_not_taken_for_the_bytes_tokenizer():
    """Preparation encodes the bytes tokenizer as the text's own bytes; a pattern that drops text must go through
    tiktoken (and its round-trip check) instead."""
    record = tok.to_dict(tok.byte_tokenizer())
    lossy = tiktoken.Encoding("bytes", pat_str="a", mergeable_ranks={t: i for i, t in enumerate(record["ranks"])},
                              special_tokens=record["special_tokens"])  # fmt: skip
    assert tok.is_byte_tokenizer(tok.byte_tokenizer()) and not tok.is_byte_tokenizer(lossy)


def _pattern_of(name: str) -> str:
    """The split pattern of tiktoken's encoding `name`, read from its definition without downloading its ranks."""
    import tiktoken_ext.openai_public as openai

    with mock.patch.object(openai, "load_tiktoken_bpe", return_value={}), \
            mock.patch.object(openai, "data_gym_to_mergeable_bpe_ranks", return_value={}):  # fmt: skip
        return openai.ENCODING_CONSTRUCTORS[name]()["pat_str"]


KNOWN_PATTERNS = {
    "gpt2": _pattern_of("gpt2"), "cl100k_base": _pattern_of("cl100k_base"), "o200k_base": _pattern_of("o200k_base"),
    "bpe": tok.build_tokenizer("bpe:300", TRAINING_TEXT)._pat_str, "bytes": tok.GPT2_PATTERN,
}  # fmt: skip
BOTH = f"{split_patterns.NEWLINE_CUT}|{split_patterns.SPACE_CUT}"


@pytest.mark.parametrize("name", KNOWN_PATTERNS)
def test_the_split_patterns_of_tiktokens_encodings_and_of_bpe_vocabularies_are_cut_at_newlines_and_spaces(name):
    assert split_patterns.safe_cut(KNOWN_PATTERNS[name]).pattern == BOTH


@pytest.mark.parametrize(
    "pattern, cut",
    [
        (r"\p{L}+ ?|\s|\S", split_patterns.NEWLINE_CUT),  # a word takes the space after it
        (r"\p{L}+: | ?\p{L}+|\s|\S", split_patterns.NEWLINE_CUT),  # "Nurse: ": the probe had no colon, so it passed
        (r"\n\S+|\S+|\s", split_patterns.SPACE_CUT),  # a newline goes with the word after it
        (r"\p{L}+ ?|\n\S+|\s|\S", None),
        (r"(\p{L}+)|\s|\S", BOTH),  # a group: the pieces are whole matches all the same
        (r"\p{L}+|\s|[^\s\p{L}]", BOTH),
    ],
)
def test_a_split_pattern_is_cut_only_where_its_pieces_stay_the_same(pattern, cut):
    found = split_patterns.safe_cut(pattern)
    assert (found.pattern if found else None) == cut


def test_a_pattern_the_probe_cannot_read_is_never_cut():
    # tiktoken's engine (fancy-regex) may read a pattern that the regex module cannot.
    with mock.patch.object(split_patterns.regex, "compile", side_effect=split_patterns.regex.error("unsupported")):
        assert split_patterns.safe_cut.__wrapped__(r"\p{L}+|\s|\S") is None


def test_a_pattern_the_probe_cannot_check_in_time_is_never_cut(monkeypatch):
    monkeypatch.setattr(split_patterns, "_CUT_PROBE_SECONDS", 0.0)
    assert split_patterns.safe_cut.__wrapped__(r"\p{L}+|\s|\S") is None


_FUZZ_CHARS = list(" \n\r\t\u00a0\u3000'/.,!_-") + list("aAzsStTdlLvVreéЖж漢字\u0301") + list("0123٣½") + ["🙂"]


@pytest.mark.parametrize("name", KNOWN_PATTERNS)
def test_text_cut_where_it_is_safe_splits_into_the_pieces_of_the_whole_text(name):
    """tiktoken encodes each piece of the split pattern on its own: equal pieces give equal tokens. Other texts
    than the probe's, cut in pieces of random sizes from two parts. (The probe found that a cut after a newline
    followed by a slash changed o200k's pieces.)"""
    pattern = KNOWN_PATTERNS[name]
    safe_cut = split_patterns.safe_cut(pattern)
    rng = random.Random(1)
    weights = [8 if char in " \n" else 1 for char in _FUZZ_CHARS]
    for _ in range(300):
        text = "".join(rng.choices(_FUZZ_CHARS, weights, k=rng.randint(1, 200)))
        at = rng.randint(0, len(text))
        pieces = list(cut_at_lines([text[:at], text[at:]], rng.randint(1, 10), safe_cut))
        assert "".join(pieces) == text
        assert [part for piece in pieces for part in regex.findall(pattern, piece)] == regex.findall(pattern, text)
