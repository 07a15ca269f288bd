"""Token shards: the split, the EOT separators, byte counts, the dtype, BPE training and the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minigpt import prepare as prep
from minigpt import tokenizer as tok
from minigpt.errors import MiniGPTError
from minigpt.prepare import Prepared, prepare

WORDS = "the quick brown fox jumps over the lazy dog while seven wizards quietly hex jolly boxing frogs".split()


def sentence(i: int) -> str:
    return " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12)) + ".\n"


def tricky_lines() -> str:
    """Text whose blank lines and indentation would tokenize differently if cut at just any newline."""
    return "".join(f"{sentence(i)}  indented {i}\n\n\tx = {i};\n" for i in range(40))


def write_docs(folder: Path, texts: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (folder / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    return folder


def shard(prepared: Prepared, split: str) -> list[int]:
    return np.memmap(prepared.dir / f"{split}.bin", dtype=prepared.meta["dtype"], mode="r").tolist()


def expected_ids(prepared: Prepared, texts: list[str]) -> list[int]:
    """One EOT before every document, then its tokens."""
    eot = tok.eot_id(prepared.tokenizer)
    return [token for text in texts for token in [eot, *tok.encode(prepared.tokenizer, text)]]


def test_every_tenth_document_goes_to_validation_with_eot_before_each(tmp_path: Path) -> None:
    docs = [f"document {i}: {sentence(i)}" for i in range(12)]
    data = write_docs(tmp_path / "data", docs)

    prepared = prepare(str(data), "bytes", tmp_path / "cache")

    assert shard(prepared, "train") == expected_ids(prepared, docs[:9] + docs[10:])
    assert shard(prepared, "val") == expected_ids(prepared, [docs[9]])
    assert prepared.meta["documents"] == 12


def test_a_single_document_splits_at_the_last_tenth_of_its_characters(tmp_path: Path) -> None:
    text = "".join(sentence(i) for i in range(20))
    (tmp_path / "one.txt").write_text(text, encoding="utf-8")
    cut = int(len(text) * 0.9)

    prepared = prepare(str(tmp_path / "one.txt"), "bytes", tmp_path / "cache")

    assert shard(prepared, "train") == expected_ids(prepared, [text[:cut]])
    assert shard(prepared, "val") == expected_ids(prepared, [text[cut:]])


def test_fewer_documents_than_the_split_needs_fall_back_to_the_tail_split() -> None:
    docs = [f"doc{i:07d}" for i in range(9)]  # 9 documents of 10 characters: the cut falls inside the last one

    labelled = list(prep._split(docs, 0.1))

    assert labelled == [("train", doc) for doc in docs[:8]] + [("train", "d"), ("val", "oc0000008")]
    assert {split for split, _ in prep._split(docs * 2, 0.05)} == {"train", "val"}  # 18 < 20 = 1/0.05 documents


def test_byte_counts_are_the_utf8_bytes_of_each_split(tmp_path: Path) -> None:
    docs = [f"héllo wörld ✓ {i}\n" for i in range(10)]
    data = write_docs(tmp_path / "data", docs)

    meta = prepare(str(data), "bytes", tmp_path / "cache").meta

    assert meta["train_bytes"] == len("".join(docs[:9]).encode("utf-8"))
    assert meta["val_bytes"] == len(docs[9].encode("utf-8"))
    assert meta["train_tokens"] == meta["train_bytes"] + 9  # byte tokens plus one EOT per document


def test_literal_endoftext_in_a_document_is_ordinary_text(tmp_path: Path) -> None:
    docs = [f"before <|endoftext|> after {i}\n" for i in range(10)]
    data = write_docs(tmp_path / "data", docs)

    prepared = prepare(str(data), "bytes", tmp_path / "cache")

    assert shard(prepared, "train").count(tok.eot_id(prepared.tokenizer)) == 9


def test_meta_records_source_tokenizer_and_sizes(tmp_path: Path) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(10)])

    prepared = prepare(str(data), "bytes", tmp_path / "cache")

    assert prepared.meta["source"] == str(data)
    assert prepared.meta["tokenizer"] == "bytes"
    assert prepared.meta["vocab_size"] == prepared.tokenizer.n_vocab == 257
    assert prepared.meta["dtype"] == "uint16"
    assert prepared.meta["val_tokens"] == len(shard(prepared, "val"))
    assert prepared.meta["fingerprint"] and not prepared.reused


def test_shard_dtype_is_uint16_while_every_id_fits() -> None:
    assert prep.shard_dtype(257) == "uint16"
    assert prep.shard_dtype(65536) == "uint16"
    assert prep.shard_dtype(65537) == "uint32"
    assert prep.shard_dtype(100277) == "uint32"  # cl100k_base


def test_the_same_corpus_twice_reuses_the_cache_without_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) * 3 for i in range(12)])
    first = prepare(str(data), "bpe:300", tmp_path / "cache")

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must neither train nor tokenize")

    monkeypatch.setattr(tok, "build_tokenizer", fail)
    monkeypatch.setattr(prep, "_write_shards", fail)
    second = prepare(str(data), "bpe:300", tmp_path / "cache")

    assert second.reused and second.dir == first.dir and second.meta == first.meta
    assert second.tokenizer.encode_ordinary("the lazy fox") == first.tokenizer.encode_ordinary("the lazy fox")


def test_a_changed_file_is_tokenized_again(tmp_path: Path) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(12)])
    first = prepare(str(data), "bytes", tmp_path / "cache")

    (data / "000.txt").write_text("a different first document\n", encoding="utf-8")
    second = prepare(str(data), "bytes", tmp_path / "cache")

    assert not second.reused and second.dir != first.dir
    assert shard(second, "train")[1:28] == list(b"a different first document\n")


def test_bpe_trains_on_the_training_split_only_and_round_trips(tmp_path: Path) -> None:
    docs = [sentence(i) * 4 for i in range(12)]
    docs[9] = "qzqzqzqz " * 50  # the validation document: its pairs must not become merges
    data = write_docs(tmp_path / "data", docs)

    prepared = prepare(str(data), "bpe:300", tmp_path / "cache")

    enc = prepared.tokenizer
    assert enc.n_vocab == prepared.meta["vocab_size"] == 300
    assert not any(b"qz" in token or b"zq" in token for token in enc._mergeable_ranks)
    assert enc.decode(shard(prepared, "train")) == "".join(tok.EOT + doc for doc in docs[:9] + docs[10:])
    assert enc.decode(shard(prepared, "val")) == tok.EOT + docs[9]


def test_long_documents_are_tokenized_in_chunks_without_changing_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = tricky_lines()
    (tmp_path / "long.txt").write_text(text, encoding="utf-8")
    monkeypatch.setattr(prep, "CHUNK_CHARS", 100)
    monkeypatch.setattr(prep, "BATCH_CHARS", 400)

    prepared = prepare(str(tmp_path / "long.txt"), "bpe:320", tmp_path / "cache")

    cut = int(len(text) * 0.9)
    assert shard(prepared, "train") == expected_ids(prepared, [text[:cut]])
    assert shard(prepared, "val") == expected_ids(prepared, [text[cut:]])


@pytest.mark.parametrize("size", [7, 20, 50, 100])
def test_cutting_at_lines_gives_the_same_tokens_as_the_whole_text(size: int) -> None:
    text = tricky_lines()
    enc = tok.build_tokenizer("bpe:320", [text])

    pieces = list(prep._cut_at_lines(text, size))

    assert len(pieces) > 1
    assert [token for piece in pieces for token in tok.encode(enc, piece)] == tok.encode(enc, text)


def test_lines_are_cut_only_between_non_space_characters() -> None:
    text = "one\ntwo \n three\n\nfour\nfive"

    pieces = list(prep._cut_at_lines(text, 2))

    assert "".join(pieces) == text
    assert pieces == ["one\n", "two \n three\n\nfour\n", "five"]


def test_an_interrupted_build_leaves_no_cache_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(12)])

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(prep, "_write_shards", interrupted)
        with pytest.raises(KeyboardInterrupt):
            prepare(str(data), "bytes", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []

    assert not prepare(str(data), "bytes", tmp_path / "cache").reused


def test_a_corpus_too_small_to_split_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "tiny.txt").write_text("a", encoding="utf-8")

    with pytest.raises(MiniGPTError, match="too small"):
        prepare(str(tmp_path / "tiny.txt"), "bytes", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_val_fraction_out_of_range_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(MiniGPTError, match="val_fraction"):
        prepare("pydoc", "bytes", tmp_path / "cache", val_fraction=0.0)


def test_load_rejects_a_folder_that_was_never_prepared(tmp_path: Path) -> None:
    with pytest.raises(MiniGPTError, match="not a prepared shard folder"):
        prep.load(tmp_path)
