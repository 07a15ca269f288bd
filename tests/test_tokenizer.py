import base64
import json

import pytest
import tiktoken

from minigpt import tokenizer as tok
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
