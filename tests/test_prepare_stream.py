"""Streamed preparation: the shards of a corpus do not depend on how it is read in pieces (recorded digests of
the shards made when each document was read whole), and a tokenizer that loses text fails preparation."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pytest
import tiktoken

from minigpt.data import files
from minigpt.data import pieces as pieces_module
from minigpt.data import prepare as prep
from minigpt.data.prepare import prepare
from minigpt.errors import MiniGPTError

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
WIDE = "Ünïcödé, Привет, xin chào, 你好 🙂 𝄞"


def shakespeare(chars: int) -> str:
    text = SOURCE.read_text(encoding="utf-8") if SOURCE.is_file() else "First Citizen:\nBefore we proceed.\n\n" * 4000
    return (text * (1 + chars // len(text)))[:chars]


def sprinkled(text: str, every: int) -> str:
    """`text` with a run of 1- to 4-byte characters every `every` characters, so pieces end inside characters."""
    return "".join(text[i : i + every] + WIDE[: 1 + i % len(WIDE)] for i in range(0, len(text), every))


def write(path: Path, text: str, newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())


def one_file(root: Path) -> str:
    write(root / "one.txt", sprinkled(shakespeare(150_000), 997))
    return str(root / "one.txt")


def crlf_file(root: Path) -> str:
    write(root / "crlf.txt", sprinkled(shakespeare(60_000), 1231), newline="\r\n")
    return str(root / "crlf.txt")


def folder(root: Path) -> str:
    """25 documents of very different sizes (one far above a piece), blank ones, some CRLF, multi-byte text."""
    for i in range(25):
        text = sprinkled(shakespeare(300 + (i * 7919) % 9000), 13 + i) if i % 6 else " \n\t"
        write(root / "docs" / f"{i:02d}.txt", text, newline="\r\n" if i % 5 == 1 else "\n")
    write(root / "docs" / "big.txt", sprinkled(shakespeare(120_000), 501))
    write(root / "docs" / "sub" / "single-line.txt", "one long line without any newline " * 3000 + WIDE)
    return str(root / "docs")


def few_documents(root: Path) -> str:
    """Fewer documents than the document split needs: the last tenth of the characters, cut inside one of them."""
    write(root / "few" / "a.txt", sprinkled(shakespeare(40_000), 333))
    write(root / "few" / "b.txt", WIDE * 3000)
    write(root / "few" / "c.txt", sprinkled(shakespeare(30_000), 77), newline="\r\n")
    return str(root / "few")


CORPORA = {"one_file": one_file, "crlf_file": crlf_file, "folder": folder, "few_documents": few_documents}

# The shards today's code made (every document read whole), as sha256 of train.bin / val.bin, the separators written,
# and the tokenizer's digest: streaming must not change a byte of them.
RECORDED: dict[tuple[str, str], tuple[str, str, int, str]] = {
    ('one_file', 'bytes'): ('13e0085c074c64418ef1f4b60aba2273faf0e11f446953408c3100e1d1c098f8', '7a2122312366481151488c4d9e26d7d851723a7cb16364c8532e6fd628ae2aa9', 2, '14bdf5b2adb2'),
    ('one_file', 'bpe:300'): ('3ec52cadf94ab218a300be03997f46a221a05f9bc9f652f9ec1c2de2c10cb38e', '19e78372f6ef5d47e88df3314d6eac94486f392a26a5b0c48b2ecc56169444e0', 2, '5ab695480168'),
    ('crlf_file', 'bytes'): ('97a3b4e83a2dc350be92778f2b6e398b4cb8be98324c31ee56a4248b63d6b7e9', '2a63bb926ded4c81698fec777fa80608e0c48187b97fe390efdc067e4ad502f0', 2, '14bdf5b2adb2'),
    ('crlf_file', 'bpe:300'): ('ae5906863306687775f87fa0b95accdff1c59dfd0c6bebada89e899ba1e97b27', '2e444373eb7a01370f7920b44834fcd6c2e4d1ed7517abfc8460b0bde2dcff79', 2, '106691f6b89b'),
    ('folder', 'bytes'): ('43c4dce097b4726bf89df90546b2140021fe5a2fe843be3a7b7dbdc81463433f', 'b42f039108fa444b416f51c1da6b35f3e0bf542e0df5cf63af4b856b33ccfd26', 22, '14bdf5b2adb2'),
    ('folder', 'bpe:300'): ('973821312d07e54b58f808ccb43ec601abbff085db7d32228464399eb2bcb2a8', 'cd4c14eaac4db46d0fb9dc828c32e825c322869ccc82005a6e4256a4682908ba', 22, '59290a33365e'),
    ('few_documents', 'bytes'): ('f13c9435ca73e3517b59c7d975df08433bf47bddc7b18929c1dea00f6c4ae93b', '679dfeda317fd775e96280aa431e054fe43747ca32a84e193864ae4c033e7d28', 4, '14bdf5b2adb2'),
    ('few_documents', 'bpe:300'): ('fe24f50b3b5fcfa411c7c806eddfaf6168781d33641ac7fadcfecf5e3f949085', '8beaa69f9c3fee1be8de7b4cf99ffcc68ee06eb0756433bedc639b16bcee75bd', 4, '5148621a073b'),
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shards_of(root: Path, corpus: str, tokenizer: str) -> tuple[str, str, int, str]:
    from minigpt import tokenizer as tok

    spec = CORPORA[corpus](root)
    prepared = prepare(spec, tokenizer, root / "cache", progress=False)
    meta = prepared.meta
    return digest(prepared.dir / "train.bin"), digest(prepared.dir / "val.bin"), meta.documents, tok.digest(prepared.tokenizer)


@pytest.fixture(params=["default", "tiny"])
def pieces(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Read pieces of the default size, or tiny ones so that every document is cut many times."""
    if request.param == "tiny":
        for module, name, size in [(files, "READ_BYTES", 1000), (pieces_module, "CHUNK_CHARS", 700), (prep, "BATCH_CHARS", 3000)]:
            monkeypatch.setattr(module, name, size, raising=False)
    return request.param


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe:300"])
@pytest.mark.parametrize("corpus", list(CORPORA))
def test_streamed_shards_equal_the_shards_of_whole_documents(tmp_path: Path, corpus: str, tokenizer: str, pieces: str) -> None:
    assert shards_of(tmp_path, corpus, tokenizer) == RECORDED[corpus, tokenizer]


def skipping_tokenizer(pattern: str) -> tiktoken.Encoding:
    """Byte-level ranks (with one merge, so it is no plain byte tokenizer) behind a split `pattern`: text that the
    pattern does not match never reaches a token."""
    ranks = {bytes([i]): i for i in range(256)} | {b"an": 256}
    return tiktoken.Encoding("skipping", pat_str=pattern, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 257})


def test_a_tokenizer_that_drops_characters_fails_preparation_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("banana cab\n" * 20_000)  # pattern "a" encodes it as "aaaa..."
    with pytest.raises(MiniGPTError, match=r"loses text: document 1 .* from byte 0 on \('banana cab") as err:
        prepare(str(tmp_path / "c.txt"), "a-only", tmp_path / "cache", progress=False, tokenizer=skipping_tokenizer("a"))
    assert "\n" not in str(err.value)
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]  # nothing cached


def test_text_lost_in_any_piece_is_found_and_its_place_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pieces_module, "CHUNK_CHARS", 100)
    text = "some words on a line\n" * 50 + "and page 42 here\n" + "more words\n" * 50  # digits: past every 16th piece
    (tmp_path / "c.txt").write_text(text)
    with pytest.raises(MiniGPTError, match=rf"document 1 .* from byte {text.index('42')} on \('42 here"):
        prepare(str(tmp_path / "c.txt"), "letters", tmp_path / "cache", progress=False, tokenizer=skipping_tokenizer(r"\p{L}+|\s+"))


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe:300"])
def test_memory_does_not_grow_with_the_size_of_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer: str) -> None:
    """With reads, cuts and batches of some 100 kB, preparing a 6 MB file (a 12 GB one, scaled down) must hold
    no more than a few of them: never the whole file (reading it whole peaked at 2.2 times its size)."""
    for module, name, size in [
        (files, "READ_BYTES", 64 << 10), (pieces_module, "CHUNK_CHARS", 32 << 10), (prep, "BATCH_CHARS", 128 << 10),
        (prep, "BPE_SAMPLE_CHARS", 1 << 20),
    ]:  # fmt: skip
        monkeypatch.setattr(module, name, size)
    write(tmp_path / "big.txt", shakespeare(6_000_000))
    tracemalloc.start()
    try:
        prepare(str(tmp_path / "big.txt"), tokenizer, tmp_path / "cache", progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000
