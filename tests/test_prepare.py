"""Token shards: the split, the EOT separators, byte counts, the dtype, BPE training, and the cache: reuse,
validation and rebuilding of damaged folders, concurrent builds, sweeping dead builds, and unwritable caches."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from minigpt import split_patterns
from minigpt import tokenizer as tok
from minigpt.data import cache as shardcache
from minigpt.data import pieces as text_pieces
from minigpt.data import prepare as prep
from minigpt.data import shards
from minigpt.data.corpus import open_corpus
from minigpt.data.prepare import prepare
from minigpt.data.shards import Prepared
from minigpt.errors import MiniGPTError

REPO = Path(__file__).resolve().parents[1]

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
    return np.memmap(prepared.dir / f"{split}.bin", dtype=prepared.meta.dtype, mode="r").tolist()


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
    assert prepared.meta.documents == 12


def test_a_single_document_splits_at_the_last_tenth_of_its_characters(tmp_path: Path) -> None:
    text = "".join(sentence(i) for i in range(20))
    (tmp_path / "one.txt").write_text(text, encoding="utf-8")
    cut = int(len(text) * 0.9)

    prepared = prepare(str(tmp_path / "one.txt"), "bytes", tmp_path / "cache")

    assert shard(prepared, "train") == expected_ids(prepared, [text[:cut]])
    assert shard(prepared, "val") == expected_ids(prepared, [text[cut:]])


def test_fewer_documents_than_the_split_needs_fall_back_to_the_tail_split() -> None:
    docs = [f"doc{i:07d}" for i in range(9)]  # 9 documents of 10 characters: the cut falls inside the last one

    labelled = list(prep.split_documents(docs, 0.1))

    assert labelled == [("train", doc) for doc in docs[:8]] + [("train", "d"), ("val", "oc0000008")]
    assert {split for split, _ in prep.split_documents(docs * 2, 0.05)} == {"train", "val"}  # 18 < 20 = 1/0.05 documents


def test_byte_counts_are_the_utf8_bytes_of_each_split(tmp_path: Path) -> None:
    docs = [f"héllo wörld ✓ {i}\n" for i in range(10)]
    data = write_docs(tmp_path / "data", docs)

    meta = prepare(str(data), "bytes", tmp_path / "cache").meta

    assert meta.train.n_bytes == len("".join(docs[:9]).encode("utf-8"))
    assert meta.val.n_bytes == len(docs[9].encode("utf-8"))
    assert meta.train.tokens == meta.train.n_bytes + 9  # byte tokens plus one EOT per document


def test_literal_endoftext_in_a_document_is_ordinary_text(tmp_path: Path) -> None:
    docs = [f"before <|endoftext|> after {i}\n" for i in range(10)]
    data = write_docs(tmp_path / "data", docs)

    prepared = prepare(str(data), "bytes", tmp_path / "cache")

    assert shard(prepared, "train").count(tok.eot_id(prepared.tokenizer)) == 9


def test_meta_records_source_tokenizer_and_sizes(tmp_path: Path) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(10)])

    prepared = prepare(str(data), "bytes", tmp_path / "cache")

    assert prepared.meta.source == str(data)
    assert prepared.meta.tokenizer == "bytes"
    assert prepared.meta.vocab_size == prepared.tokenizer.n_vocab == 257
    assert prepared.meta.dtype == "uint16"
    assert prepared.meta.val.tokens == len(shard(prepared, "val"))
    assert prepared.meta.fingerprint and not prepared.reused


def test_shard_dtype_is_uint16_while_every_id_fits() -> None:
    assert shards.shard_dtype(257) == "uint16"
    assert shards.shard_dtype(65536) == "uint16"
    assert shards.shard_dtype(65537) == "uint32"
    assert shards.shard_dtype(100277) == "uint32"  # cl100k_base


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
    assert enc.n_vocab == prepared.meta.vocab_size == 300
    assert not any(b"qz" in token or b"zq" in token for token in enc._mergeable_ranks)
    assert enc.decode(shard(prepared, "train")) == "".join(tok.EOT + doc for doc in docs[:9] + docs[10:])
    assert enc.decode(shard(prepared, "val")) == tok.EOT + docs[9]


def test_long_documents_are_tokenized_in_chunks_without_changing_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = tricky_lines()
    (tmp_path / "long.txt").write_text(text, encoding="utf-8")
    monkeypatch.setattr(text_pieces, "CHUNK_CHARS", 100)
    monkeypatch.setattr(prep, "BATCH_CHARS", 400)

    prepared = prepare(str(tmp_path / "long.txt"), "bpe:320", tmp_path / "cache")

    cut = int(len(text) * 0.9)
    assert shard(prepared, "train") == expected_ids(prepared, [text[:cut]])
    assert shard(prepared, "val") == expected_ids(prepared, [text[cut:]])


def test_a_document_without_a_safe_newline_is_tokenized_in_pieces_cut_before_spaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Paragraphs apart by blank lines: no newline between two non-space characters, so it was encoded whole.
    text = "".join(f"{sentence(i)} Then {i}, and more.\n\n" for i in range(300))
    (tmp_path / "paragraphs.txt").write_text(text, encoding="utf-8")
    monkeypatch.setattr(text_pieces, "CHUNK_CHARS", 100)
    monkeypatch.setattr(prep, "BATCH_CHARS", 400)
    encoded: list[str] = []
    array_encoder = prep._array_encoder
    monkeypatch.setattr(prep, "_array_encoder", lambda *a: lambda texts: array_encoder(*a)(encoded.extend(texts) or texts))

    prepared = prepare(str(tmp_path / "paragraphs.txt"), "bpe:320", tmp_path / "cache")

    cut = int(len(text) * 0.9)
    assert shard(prepared, "train") == expected_ids(prepared, [text[:cut]])
    assert shard(prepared, "val") == expected_ids(prepared, [text[cut:]])
    assert "".join(encoded) == text and max(map(len, encoded)) < 130


@pytest.mark.parametrize("size", [7, 20, 50, 100])
def test_cutting_at_lines_gives_the_same_tokens_as_the_whole_text(size: int) -> None:
    text = tricky_lines()
    enc = tok.build_tokenizer("bpe:320", [text])

    pieces = list(text_pieces.cut_at_lines([text], size, tok.safe_cut(enc)))

    assert len(pieces) > 1
    assert [token for piece in pieces for token in tok.encode(enc, piece)] == tok.encode(enc, text)


def test_lines_are_cut_only_between_non_space_characters() -> None:
    text = "one\ntwo \n three\n\nfour\n/five\nsix"

    pieces = list(text_pieces.cut_at_lines([text], 2, re.compile(split_patterns.NEWLINE_CUT)))

    assert "".join(pieces) == text
    assert pieces == ["one\n", "two \n three\n\nfour\n/five\n", "six"]


def test_without_a_safe_place_to_cut_a_text_stays_whole() -> None:
    assert list(text_pieces.cut_at_lines(["one\ntwo", " three"], 1, None)) == ["one\ntwo three"]
    assert list(text_pieces.cut_at_lines(["", ""], 1, None)) == []


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
        shards.load(tmp_path)


def flip_first_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def set_meta(folder: Path, key: str, value: object) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta[key] = value
    (folder / "meta.json").write_text(json.dumps(meta))


DAMAGES = {
    "train.bin truncated to half": lambda d: (d / "train.bin").write_bytes((d / "train.bin").read_bytes()[:300]),
    "empty val.bin": lambda d: (d / "val.bin").write_bytes(b""),
    "odd-sized train.bin": lambda d: (d / "train.bin").write_bytes((d / "train.bin").read_bytes() + b"\0"),
    "missing val.bin": lambda d: (d / "val.bin").unlink(),
    "same-size change in train.bin": lambda d: flip_first_byte(d / "train.bin"),
    "missing meta.json": lambda d: (d / "meta.json").unlink(),
    "meta.json not JSON": lambda d: (d / "meta.json").write_text("{"),
    "meta.json token count as text": lambda d: set_meta(d, "train_tokens", "many"),
    "meta.json without checksums": lambda d: set_meta(d, "val_sha256", None),
    "tokenizer.json not JSON": lambda d: (d / shards.TOKENIZER_FILE).write_text("{"),
    "tokenizer.json of another vocabulary": lambda d: tok.save(
        tok.build_tokenizer("bpe:260", ["abcabcabd " * 20]), d / shards.TOKENIZER_FILE
    ),
    "missing tokenizer.json": lambda d: (d / shards.TOKENIZER_FILE).unlink(),
    "a file instead of the folder": lambda d: (shutil.rmtree(d), d.write_text("not a folder")),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_cache_folder_is_rebuilt_with_one_warning(
    tmp_path: Path, damage: Callable[[Path], object], caplog: pytest.LogCaptureFixture
) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) * 5 for i in range(12)])
    first = prepare(str(data), "bytes", tmp_path / "cache")
    before = {split: shard(first, split) for split in shards.SPLITS}
    assert len(before["train"]) * 2 > 300  # so that truncating to 300 bytes cuts the shard

    damage(first.dir)
    with caplog.at_level(logging.INFO, logger="minigpt.data.prepare"):
        second = prepare(str(data), "bytes", tmp_path / "cache")

    assert not second.reused and second.dir == first.dir and second.meta == first.meta
    assert {split: shard(second, split) for split in shards.SPLITS} == before
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"{first.dir} are damaged" in warnings[0].getMessage()
    assert prepare(str(data), "bytes", tmp_path / "cache").reused
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [first.dir.name]


def test_meta_records_a_checksum_of_each_shard(tmp_path: Path) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(12)])

    prepared = prepare(str(data), "bytes", tmp_path / "cache")

    for split in shards.SPLITS:
        content = (prepared.dir / f"{split}.bin").read_bytes()
        assert prepared.meta.split(split).sha256 == hashlib.sha256(content).hexdigest()


def target_of(data: Path, cache: Path) -> Path:
    fingerprint = open_corpus(str(data), cache).fingerprint()
    return cache / shardcache.cache_key(fingerprint, "bytes", 0.1)


def test_a_valid_folder_another_process_finished_first_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(12)])
    target = target_of(data, tmp_path / "cache")
    write_shards = prep._write_shards
    theirs = {}

    def race(*args: Any, **kwargs: Any) -> dict[str, Any]:
        monkeypatch.setattr(prep, "_write_shards", write_shards)
        theirs["prepared"] = prepare(str(data), "bytes", tmp_path / "cache")  # the other process, done first
        theirs["inode"] = target.stat().st_ino
        return write_shards(*args, **kwargs)

    monkeypatch.setattr(prep, "_write_shards", race)
    ours = prepare(str(data), "bytes", tmp_path / "cache")

    assert ours.dir == theirs["prepared"].dir == target and target.stat().st_ino == theirs["inode"]
    assert ours.meta == theirs["prepared"].meta
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [target.name]


def test_a_bad_folder_that_appears_while_building_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(12)])
    target = target_of(data, tmp_path / "cache")
    write_shards = prep._write_shards

    def race(*args: Any, **kwargs: Any) -> dict[str, Any]:
        target.mkdir()  # another process left a half-copied folder under the final name
        (target / "train.bin").write_bytes(b"\0\0")
        return write_shards(*args, **kwargs)

    monkeypatch.setattr(prep, "_write_shards", race)
    built = prepare(str(data), "bytes", tmp_path / "cache")

    assert built.dir == target and shards.load(target).meta == built.meta
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [target.name]


def test_a_build_killed_without_cleanup_is_swept_by_the_next_prepare(tmp_path: Path) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(12)])
    cache = tmp_path / "cache"
    killed = (
        "import os, signal, sys\n"
        "from minigpt.data import prepare as prep\n"
        "prep._write_shards = lambda *args: os.kill(os.getpid(), signal.SIGKILL)\n"
        "prep.prepare(sys.argv[1], 'bytes', prep.Path(sys.argv[2]))\n"
    )
    result = subprocess.run([sys.executable, "-c", killed, str(data), str(cache)], cwd=REPO, capture_output=True)
    assert result.returncode == -signal.SIGKILL
    (left,) = cache.iterdir()
    assert left.name.startswith(".") and left.name.endswith(".tmp")

    prepared = prepare(str(data), "bytes", cache)

    assert [path.name for path in cache.iterdir()] == [prepared.dir.name]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_the_sweep_keeps_temporary_folders_of_live_processes_and_other_hosts(tmp_path: Path) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(12)])
    cache = tmp_path / "cache"
    cache.mkdir()
    pid = dead_pid()
    own_live = shardcache.owned_sibling(cache / "0123456789abcdef")
    own_dead = cache / f".0123456789abcdef.{shardcache.host()}.{pid}.0badc0de.tmp"
    other_host = cache / f".0123456789abcdef.{shardcache.host()}-elsewhere.{pid}.0badc0de.tmp"
    unknown = cache / ".0123456789abcdef.x1y2z3w4.tmp"  # no owner in the name: never swept
    for folder in (own_live, own_dead, other_host, unknown):
        folder.mkdir()

    prepared = prepare(str(data), "bytes", cache)

    assert sorted(path.name for path in cache.iterdir()) == sorted(
        [prepared.dir.name, own_live.name, other_host.name, unknown.name]
    )


def assert_one_line_cache_error(err: pytest.ExceptionInfo[MiniGPTError], folder: Path) -> None:
    assert f"cache folder {folder}" in str(err.value) and "--cache_dir" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_cache_path_that_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(12)])
    (tmp_path / "cache").write_text("a file")

    with pytest.raises(MiniGPTError, match="is a file") as err:
        prepare(str(data), "bytes", tmp_path / "cache")
    assert_one_line_cache_error(err, tmp_path / "cache")


def test_a_cache_path_under_a_file_is_a_user_error(tmp_path: Path) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(12)])
    (tmp_path / "file").write_text("a file")

    with pytest.raises(MiniGPTError, match="is a file") as err:
        prepare(str(data), "bytes", tmp_path / "file" / "cache")
    assert_one_line_cache_error(err, tmp_path / "file" / "cache")


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Make folders read-only (skipping the test where that stops nothing, e.g. as root); restored afterwards."""
    folders: list[Path] = []

    def make(folder: Path) -> None:
        folder.chmod(0o555)
        folders.append(folder)

    yield make
    for folder in folders:
        folder.chmod(0o755)


def writes_are_refused(folder: Path) -> bool:
    try:
        (folder / ".probe").touch()
    except PermissionError:
        return True
    (folder / ".probe").unlink()
    return False


def test_a_read_only_cache_is_a_user_error(tmp_path: Path, read_only: Callable[[Path], None]) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(12)])
    (tmp_path / "cache").mkdir()
    read_only(tmp_path / "cache")
    if not writes_are_refused(tmp_path / "cache"):
        pytest.skip("permissions do not stop this user's writes (root)")

    with pytest.raises(MiniGPTError, match="Permission denied") as err:
        prepare(str(data), "bytes", tmp_path / "cache")
    assert_one_line_cache_error(err, tmp_path / "cache")


def test_valid_shards_are_reused_from_a_read_only_cache(tmp_path: Path, read_only: Callable[[Path], None]) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(12)])
    first = prepare(str(data), "bytes", tmp_path / "cache")
    read_only(first.dir)
    read_only(tmp_path / "cache")

    second = prepare(str(data), "bytes", tmp_path / "cache")

    assert second.reused and second.meta == first.meta
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [first.dir.name]


def test_a_full_disk_while_writing_shards_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_docs(tmp_path / "data", [sentence(i) for i in range(12)])

    def disk_full(enc: Any, pieces: Any, out: Path, dtype: str, progress: bool, total: Any) -> None:
        (out / "train.bin").write_bytes(b"\0" * 64)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "train.bin"))

    monkeypatch.setattr(prep, "_write_shards", disk_full)
    with pytest.raises(MiniGPTError, match=f"no space left on device while writing shards to {tmp_path / 'cache'}:"):
        prepare(str(data), "bytes", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_separate_validation_corpus_makes_all_of_each_one_split(tmp_path: Path) -> None:
    train_text, val_text = "the training text, all of it\n" * 40, "held-out prose, never trained on\n" * 10
    (tmp_path / "train.txt").write_text(train_text)
    (tmp_path / "val.txt").write_text(val_text)
    cache = tmp_path / "cache"
    both = prepare(str(tmp_path / "train.txt"), "bytes", cache, val_spec=str(tmp_path / "val.txt"))
    eot = tok.eot_id(both.tokenizer)
    for split, text in (("train", train_text), ("val", val_text)):
        ids = np.fromfile(both.dir / f"{split}.bin", dtype=both.meta.dtype).tolist()
        assert ids == [eot, *text.encode()] and both.meta.split(split).n_bytes == len(text.encode())
    assert both.meta.val_source == str(tmp_path / "val.txt") and both.meta.val_fraction == 0.0
    alone = prepare(str(tmp_path / "train.txt"), "bytes", cache)  # the usual split of the same corpus: its own folder
    assert alone.dir != both.dir and alone.meta.train.tokens < both.meta.train.tokens
    assert prepare(str(tmp_path / "train.txt"), "bytes", cache, val_spec=str(tmp_path / "val.txt")).reused
    (tmp_path / "val.txt").write_text(val_text + "one more line\n")  # the validation text is part of the key
    assert not prepare(str(tmp_path / "train.txt"), "bytes", cache, val_spec=str(tmp_path / "val.txt")).reused


def test_the_tokenizing_bar_knows_its_total(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a total, the bar shows how far along preparation is and how long it has left."""
    seen: dict[str, Any] = {}

    class Bar:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs, counted=0)

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

        def update(self, n: int) -> None:
            seen["counted"] += n

    text = "ünïcode and ascii text\n" * 500
    (tmp_path / "a.txt").write_text(text)
    monkeypatch.setattr(prep, "tqdm", Bar)
    prepare(str(tmp_path / "a.txt"), "bytes", tmp_path / "cache")
    assert seen["total"] == seen["counted"] == len(text.encode())


def test_byte_shards_are_written_without_tokenizing_and_equal_the_tokenizers_ids(tmp_path: Path) -> None:
    """The bytes tokenizer's ids are the UTF-8 bytes, so prepare copies them; the result must not differ."""
    enc = tok.byte_tokenizer()
    assert tok.is_byte_tokenizer(enc) and not tok.is_byte_tokenizer(tok.build_tokenizer("bpe:260", ["some training text, some more text "] * 50))
    texts = ["Ünïcödé, Привет, xin chào, 你好 🙂\n" * 50, "tabs\tand  spaces\r\n" * 40]
    write_docs(tmp_path / "data", texts)
    prepared = prepare(str(tmp_path / "data"), "bytes", tmp_path / "cache", val_fraction=0.5)
    ids = [np.fromfile(prepared.dir / f"{split}.bin", dtype=prepared.meta.dtype).tolist() for split in ("train", "val")]
    expected = [tok.encode(enc, piece) for _, piece in prep.split_documents(open_corpus(str(tmp_path / "data")).documents(), 0.5)]
    assert sum(ids, []) == [i for ids in expected for i in (tok.eot_id(enc), *ids)]


def lines_text(word: str, lines: int) -> str:
    return "".join(f"{word} {i}\n" for i in range(lines))


def test_spread_sample_keeps_everything_below_its_budget_and_an_even_spread_above(monkeypatch) -> None:
    monkeypatch.setattr(text_pieces, "CHUNK_CHARS", 50)
    texts = [lines_text("alpha", 400), lines_text("omega", 400)]
    documents = [[text[:1000], text[1000:]] for text in texts]  # each streamed in two pieces
    size = sum(len(t) for t in texts)
    assert "".join(text_pieces.spread_sample(documents, size, size)) == "".join(texts)  # within the budget: all, in order
    sample = list(text_pieces.spread_sample(documents, size // 10, size))
    kept = sum(map(len, sample))
    assert size // 10 <= kept < size // 10 + 2 * 60  # the budget, give or take a piece
    assert all(piece in "".join(texts) for piece in sample)  # whole pieces, cut at newlines
    assert any(p.startswith("alpha 0\n") for p in sample) and any("omega 3" in p for p in sample)  # from both ends
    halves = ["alpha" in p for p in sample]
    assert abs(sum(halves) - len(sample) / 2) <= 1  # as much of the first half as of the second
    head = "".join(text_pieces.spread_sample(documents, size // 10, None))  # no size known: the beginning
    assert head.startswith("alpha 0\n") and "omega" not in head and len(head) >= size // 10


def test_a_bpe_vocabulary_learns_from_the_whole_corpus_not_only_its_beginning(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(text_pieces, "CHUNK_CHARS", 200)
    monkeypatch.setattr(prep, "BPE_SAMPLE_CHARS", 20_000)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"aardvark{i % 7} abacus\n" for i in range(4000)) + "".join(f"zymurgy{i % 7} zephyr\n" for i in range(4000)))
    enc = prepare(str(corpus), "bpe:280", tmp_path / "cache", progress=False).tokenizer
    merged = [enc.decode_single_token_bytes(i) for i in range(256, enc.n_vocab - 1)]
    # Trained on the first 20 kB alone, no merge would hold a z (the second half's letter).
    assert any(b"z" in token for token in merged) and any(b"rdv" in token for token in merged)
