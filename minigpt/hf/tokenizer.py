"""Hugging Face tokenizer files <-> `tiktoken.Encoding`, for byte-level BPEs (GPT-2 and its kin).

`load` reads ``tokenizer.json`` (or ``vocab.json`` + ``merges.txt``, read as GPT-2's: its split pattern, no
prefix space, ``<|endoftext|>`` in the vocabulary) into an Encoding with the same ids; `save` writes a
``tokenizer.json`` that transformers' AutoTokenizer loads with the Encoding's ids. Only json and the
standard library: transformers and tokenizers are not needed at run time.

The two BPEs agree only under conditions that `load` checks and `save` establishes. tiktoken merges the
adjacent pair whose concatenation has the lowest id and first looks the whole piece up in its ranks;
Hugging Face merges the listed pair that comes first in ``merges``, and looks the piece up first only when
``ignore_merges`` is set. So every merge's result must be in the vocabulary, ids must grow with the merge
order, and each merge must be the last step of tiktoken's own BPE on its result's bytes. Their regex
engines differ too (fancy-regex vs Oniguruma), so split patterns are rewritten on the way (`minigpt.hf.regex_dialects`).

Special tokens: a Hugging Face tokenizer matches them even in ordinary text, while minigpt's `encode` never
does, so a literal ``<|endoftext|>`` in a text gets different ids on the two sides. They may be numbered before
the ordinary tokens (as the tokenizers trainer does), after or between them, as long as no id is left unused.
The fields of the files are read and type-checked in `minigpt.hf.tokenizer_json`; the split pattern is checked
by `minigpt.split_patterns` before tiktoken trusts it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tiktoken

from minigpt import split_patterns
from minigpt.errors import MiniGPTError
from minigpt.hf.regex_dialects import to_oniguruma
from minigpt.hf.tokenizer_json import (
    BPEParts,
    read_tokenizer_json,
    read_vocab_and_merges,
)
from minigpt.tokenizer import EOT


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte: printable Latin-1 bytes stand for themselves, the rest
    for U+0100 upwards, so that every token is a string without spaces or control characters."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    return [chr(b) if b in kept else chr(next(shifted)) for b in range(256)]


_BYTE_CHARS = _byte_chars()
_CHAR_BYTES = {char: b for b, char in enumerate(_BYTE_CHARS)}


def load(folder: Path) -> tiktoken.Encoding:
    """The tokenizer of a Hugging Face GPT-2-style folder as a tiktoken Encoding with the same ids."""
    if (folder / "tokenizer.json").is_file():
        return _encoding(folder / "tokenizer.json", read_tokenizer_json(folder / "tokenizer.json"))
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return _encoding(folder / "vocab.json", read_vocab_and_merges(folder / "vocab.json", folder / "merges.txt"))
    raise MiniGPTError(
        f"{folder} holds no tokenizer.json, nor vocab.json and merges.txt: it is not a Hugging Face tokenizer"
    )


def save(enc: tiktoken.Encoding, folder: Path) -> None:
    """Write tokenizer files into `folder` that transformers' AutoTokenizer loads with the same ids as `enc`; a
    write the file system refuses raises its OSError (`minigpt.hf.export` says which folder failed)."""
    if EOT not in enc.special_tokens_set:
        raise MiniGPTError(f"tokenizer {enc.name} has no {EOT} token, which Hugging Face needs as bos and eos")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # loads tokenizer.json as written, in transformers 4 and 5
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": EOT,
        "clean_up_tokenization_spaces": False,  # else transformers 4 drops the space in " ." on decode
    }
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "tokenizer.json", _tokenizer_json(enc))
    _write_json(folder / "tokenizer_config.json", config)


def _tokenizer_json(enc: tiktoken.Encoding) -> dict[str, Any]:
    ranks: dict[bytes, int] = enc._mergeable_ranks  # tiktoken has no public accessor for its ranks
    specials = sorted(enc._special_tokens.items(), key=_id)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    split = {"type": "Split", "pattern": {"Regex": to_oniguruma(enc._pat_str)}, "behavior": "Isolated"}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": text, "special": True, "normalized": False}
            | {"single_word": False, "lstrip": False, "rstrip": False}
            for text, i in specials
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split | {"invert": False}, byte_level]},
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            # tiktoken looks each whole piece up before merging; this makes Hugging Face do the same.
            "ignore_merges": True,
            # The specials too, as GPT-2's file has them: the tokenizers library numbers an added token that the
            # vocabulary lacks after the vocabulary, not as it says (measured), which is wrong when they come first.
            "vocab": dict(sorted([*((_text(token), rank) for token, rank in ranks.items()), *specials], key=_id)),
            "merges": _merges(ranks),
        },
    }


def _id(item: tuple[Any, int]) -> int:
    return item[1]


def _merges(ranks: dict[bytes, int]) -> list[str]:
    """Each multi-byte token's last step in tiktoken's BPE, in rank order, as "left right" merge lines."""
    merges = []
    for token, rank in sorted(ranks.items(), key=_id):
        parts = _bpe(ranks, token, rank) if len(token) > 1 else []
        # Tokens that BPE never builds (more than two parts) are reached only by the whole-piece lookup.
        if len(parts) == 2:
            merges.append(f"{_text(parts[0])} {_text(parts[1])}")
    return merges


def _bpe(ranks: dict[bytes, int], piece: bytes, below: int) -> list[bytes]:
    """tiktoken's BPE of `piece`, using only the tokens ranked below `below`."""
    parts = [bytes([b]) for b in piece]
    while True:
        best = (below, -1)
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1], below)
            if rank < best[0]:  # strict: the leftmost of equal ranks wins, as in tiktoken
                best = (rank, i)
        if best[1] < 0:
            return parts
        i = best[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def _encoding(path: Path, parts: BPEParts) -> tiktoken.Encoding:
    """Check that tiktoken gives the ids of the Hugging Face BPE described by `parts`, then build it."""
    specials = parts.specials
    if EOT not in specials:
        raise MiniGPTError(f"{path} has no special {EOT} token, which minigpt needs to separate documents")
    problem = split_patterns.problem(parts.pattern)
    if problem:
        raise MiniGPTError(f"{path}: its split pattern {problem}")
    ranks = _ranks(path, parts.vocab, specials)
    # Special tokens may come first (as the tokenizers trainer numbers them), last or between, but an id in a
    # gap belongs to no token, and sampling it could not be decoded.
    ids = sorted([*ranks.values(), *specials.values()])
    if ids != list(range(len(ids))):
        raise MiniGPTError(
            f"{path} numbers its {len(ids)} tokens with a gap of unused ids (no token to decode) or one id twice; "
            f"minigpt needs ids 0 to {len(ids) - 1}, each used once"
        )
    _check_merges(path, ranks, parts.merges, parts.shortcut)
    name = path.parent.name or "hf"
    return tiktoken.Encoding(name, pat_str=parts.pattern, mergeable_ranks=ranks, special_tokens=specials)


def _ranks(path: Path, vocab: dict[str, int], specials: dict[str, int]) -> dict[bytes, int]:
    ranks = {}
    for text, i in vocab.items():
        if text in specials:
            if specials[text] != i:
                raise MiniGPTError(f"{path} gives {text!r} two ids, {i} and {specials[text]}")
            continue
        token = _token(text)
        if token is None or type(i) is not int:
            raise MiniGPTError(f"{path} has the token {text!r}, which is not byte-level as in GPT-2-style tokenizers")
        ranks[token] = i
    if any(bytes([b]) not in ranks for b in range(256)):
        raise MiniGPTError(f"{path} lacks some of the 256 single-byte tokens, so some text could not be encoded")
    return ranks


def _check_merges(path: Path, ranks: dict[bytes, int], merges: list[tuple[str, ...]], shortcut: bool) -> None:
    """Refuse merges that tiktoken, which merges by the ids of the results, would apply differently."""
    built: dict[bytes, tuple[bytes, bytes]] = {}
    last = -1
    for n, merge in enumerate(merges, 1):
        pair, shown = tuple(_token(text) for text in merge), " ".join(map(str, merge))
        if len(pair) != 2 or None in pair or not {*pair, pair[0] + pair[1]} <= ranks.keys():
            raise MiniGPTError(f"{path}: merge {n} {shown!r} joins or makes tokens outside the vocabulary")
        result = ranks[pair[0] + pair[1]]
        if result <= last:
            raise MiniGPTError(
                f"{path}: merge {n} {shown!r} makes id {result} after {last}; tiktoken needs ids that grow with merges"
            )
        built[pair[0] + pair[1]], last = pair, result
    for token, rank in ranks.items():
        if len(token) < 2:
            continue
        parts = _bpe(ranks, token, rank)
        if token in built and tuple(parts) != built[token]:
            merge = " ".join(_text(part) for part in built[token])
            built_by = [_text(part) for part in parts]
            raise MiniGPTError(f"{path}: tiktoken would build {_text(token)!r} from {built_by}, not by merge {merge!r}")
        if token not in built and (len(parts) == 2 or not shortcut):
            raise MiniGPTError(f"{path}: no merge makes the token {_text(token)!r}, yet tiktoken would")


def _text(token: bytes) -> str:
    return "".join(_BYTE_CHARS[b] for b in token)


def _token(text: str) -> bytes | None:
    """The bytes a byte-level token string stands for, or None when it is not byte-level."""
    if not isinstance(text, str) or not text or any(char not in _CHAR_BYTES for char in text):
        return None
    return bytes(_CHAR_BYTES[char] for char in text)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
