"""Evaluation text is encoded in pieces as preparation encodes it: the ids of every document encoded whole, with
memory that holds the ids and a piece of text, not every document and a Python list of ids."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt import tokenizer
from minigpt.data.pieces import CHUNK_CHARS, split_documents
from minigpt.data.prepare import prepare
from minigpt.evaluate import corpus_tokens
from tests.helpers import REPO, TEXT

# Lines of words, digits and non-Latin text; the long document spans several pieces of CHUNK_CHARS.
LINE = "line {i}: the quick brown fox, 42 Привет 漢字 naïve -- 'quoted'\n"
LONG = "".join(LINE.format(i=i) for i in range(3 * CHUNK_CHARS // len(LINE) + 7))


@pytest.fixture(scope="module")
def bpe():
    return tokenizer.build_tokenizer("bpe:320", [LONG[:100_000], TEXT])


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(12):
        (folder / f"{i:02}.txt").write_text(LONG if i == 3 else f"Document {i}, café.\n" + TEXT[: 300 + 40 * i])
    return folder


def whole(enc, texts: list[str]) -> list[int]:
    """Each text encoded whole after one <|endoftext|>."""
    ids = []
    for text in texts:
        ids += [tokenizer.eot_id(enc), *tokenizer.encode(enc, text)]
    return ids


def test_a_long_document_gets_the_ids_of_encoding_it_whole(bpe, corpus):
    texts = [path.read_text() for path in sorted(corpus.iterdir())]
    tokens = corpus_tokens(str(corpus), bpe, "all")
    assert tokens.ids.tolist() == whole(bpe, texts)
    assert tokens.n_bytes == sum(len(text.encode()) for text in texts)


def test_byte_tokens_are_read_as_they_come_and_equal_encoding_each_document_whole(corpus):
    (corpus / "99.txt").write_text("no newline at all, " * 20_000)
    texts = [path.read_text() for path in sorted(corpus.iterdir())]
    enc = tokenizer.byte_tokenizer()
    tokens = corpus_tokens(str(corpus), enc, "all")
    assert tokens.ids.tolist() == whole(enc, texts) and tokens.n_bytes == sum(len(text.encode()) for text in texts)


def test_a_document_without_a_safe_newline_is_encoded_in_pieces_with_the_ids_of_encoding_it_whole(bpe, corpus, monkeypatch):
    (corpus / "99.txt").write_text("paragraph after paragraph, no line between.\n\n" * 20_000)  # 900,000 characters
    expected = whole(bpe, [path.read_text() for path in sorted(corpus.iterdir())])
    pieces: list[int] = []
    encode = tokenizer.encode
    monkeypatch.setattr(tokenizer, "encode", lambda enc, text: pieces.append(len(text)) or encode(enc, text))
    assert corpus_tokens(str(corpus), bpe, "all").ids.tolist() == expected
    assert max(pieces) < CHUNK_CHARS + 100


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_split_gets_the_ids_of_encoding_its_documents_whole(bpe, corpus, split):
    texts = [path.read_text() for path in sorted(corpus.iterdir())]
    chosen = [text for label, text in split_documents(texts, 0.25) if label == split]
    assert corpus_tokens(str(corpus), bpe, split, 0.25).ids.tolist() == whole(bpe, chosen)


def test_a_split_of_one_long_document_is_the_shard_that_training_wrote(bpe, tmp_path):
    (tmp_path / "long.txt").write_text(LONG)
    prepared = prepare(str(tmp_path / "long.txt"), "bpe", tmp_path / "cache", 0.25, progress=False, tokenizer=bpe)
    for split in ("train", "val"):
        shard = np.fromfile(prepared.dir / f"{split}.bin", dtype=prepared.meta.dtype)
        assert corpus_tokens(str(tmp_path / "long.txt"), bpe, split, 0.25, tmp_path / "cache").ids.tolist() == shard.tolist()


PEAK = """
import json, resource, sys
from minigpt import tokenizer
from minigpt.evaluate import corpus_tokens
enc = tokenizer.byte_tokenizer()
corpus_tokens(__file__, enc)  # warms every import and allocator path on a small text
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tokens = corpus_tokens(sys.argv[1], enc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"kib": after - before, "bytes": tokens.n_bytes}))
"""


@pytest.mark.parametrize("lines", [True, False], ids=["lines", "one-line"])
def test_encoding_a_text_for_evaluation_takes_little_more_memory_than_its_ids(tmp_path, lines):
    """The bytes tokenizer gives a token per byte, 8 bytes each as int64: the peak stays near that (measured: 9.1
    bytes per byte of a 20 MB text, from 27 when every document and a list of ids were held), also for a text with
    no newline, which was held whole with a Python list of its ids (36 bytes per byte)."""
    text = tmp_path / "text.txt"
    lined = "".join(LINE.format(i=i) for i in range(8_000_000 // len(LINE)))
    text.write_text(lined if lines else "to be or not " * 1_540_000)  # 20 MB: measured 10 bytes per byte, 19 before
    (tmp_path / "peak.py").write_text(PEAK)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "peak.py"), str(text)], cwd=REPO, check=True, capture_output=True, text=True
    )
    peak = json.loads(done.stdout.splitlines()[-1])
    assert peak["kib"] * 1024 / peak["bytes"] < 14
