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
does, so a literal ``<|endoftext|>`` in a text gets different ids on the two sides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tiktoken

from minigpt.errors import MiniGPTError
from minigpt.hf.regex_dialects import from_oniguruma, to_oniguruma
from minigpt.tokenizer import EOT, GPT2_PATTERN, specials_follow_ranks


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
        return _from_tokenizer_json(folder / "tokenizer.json")
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return _from_vocab_and_merges(folder / "vocab.json", folder / "merges.txt")
    raise MiniGPTError(
        f"{folder} holds no tokenizer.json, nor vocab.json and merges.txt: it is not a Hugging Face tokenizer"
    )


def save(enc: tiktoken.Encoding, folder: Path) -> None:
    """Write tokenizer files into `folder` that transformers' AutoTokenizer loads with the same ids as `enc`."""
    if EOT not in enc.special_tokens_set:
        raise MiniGPTError(f"tokenizer {enc.name} has no {EOT} token, which Hugging Face needs as bos and eos")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # loads tokenizer.json as written, in transformers 4 and 5
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": EOT,
        "clean_up_tokenization_spaces": False,  # else transformers 4 drops the space in " ." on decode
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "tokenizer.json", _tokenizer_json(enc))
        _write_json(folder / "tokenizer_config.json", config)
    except OSError as err:
        raise MiniGPTError(f"cannot write the tokenizer into {folder}: {err.strerror or err}") from None


def _tokenizer_json(enc: tiktoken.Encoding) -> dict[str, Any]:
    ranks: dict[bytes, int] = enc._mergeable_ranks  # tiktoken has no public accessor for its ranks
    specials = sorted(enc._special_tokens.items(), key=lambda item: item[1])
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
            "vocab": {_text(token): rank for token, rank in sorted(ranks.items(), key=lambda item: item[1])},
            "merges": _merges(ranks),
        },
    }


def _merges(ranks: dict[bytes, int]) -> list[str]:
    """Each multi-byte token's last step in tiktoken's BPE, in rank order, as "left right" merge lines."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
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


def _from_tokenizer_json(path: Path) -> tiktoken.Encoding:
    data = _read_json(path)
    try:  # a file that parses but lacks fields or has wrong types is as unusable as one that doesn't parse
        model = data["model"]
        _check_pipeline(path, data, model)
        pattern = _pattern(path, data["pre_tokenizer"])
        specials = {}
        for added in data["added_tokens"]:
            if not added["special"]:
                raise MiniGPTError(
                    f"{path} adds the non-special token {added['content']!r}, which tiktoken cannot match in text"
                )
            specials[added["content"]] = added["id"]
        vocab = dict(model["vocab"])
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        shortcut = bool(model.get("ignore_merges", False))
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise MiniGPTError(f"{path} is not a valid tokenizers file ({type(err).__name__}: {err})") from None
    return _encoding(path, vocab, merges, specials, pattern, shortcut)


def _from_vocab_and_merges(vocab_path: Path, merges_path: Path) -> tiktoken.Encoding:
    vocab = _read_json(vocab_path)
    try:
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise MiniGPTError(f"cannot read {merges_path}: {err}") from None
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    if not isinstance(vocab, dict):
        raise MiniGPTError(f"{vocab_path} is not a vocabulary: it should map tokens to ids")
    # GPT-2 keeps its one special token in vocab.json; the merges never build it.
    specials = {EOT: vocab[EOT]} if EOT in vocab else {}
    return _encoding(vocab_path, vocab, merges, specials, GPT2_PATTERN, shortcut=False)


def _check_pipeline(path: Path, data: dict[str, Any], model: dict[str, Any]) -> None:
    """Refuse every stage that tiktoken cannot reproduce: only the byte-level BPE of GPT-2 converts."""
    if model["type"] != "BPE":
        raise MiniGPTError(
            f"{path} holds a {model['type']} model, not a byte-level BPE; only GPT-2-style tokenizers convert"
        )
    if model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise MiniGPTError(f"{path} holds a SentencePiece-style BPE (byte fallback or affixes), not a byte-level one")
    if model.get("dropout"):
        raise MiniGPTError(f"{path} sets BPE dropout, which makes its ids random; set dropout to null")
    normalizer = data["normalizer"]
    if normalizer is not None and normalizer != {"type": "Sequence", "normalizers": []}:
        raise MiniGPTError(f"{path} has a {normalizer['type']} normalizer, which changes the text; tiktoken cannot")
    if (data["decoder"] or {}).get("type") != "ByteLevel":
        raise MiniGPTError(f"{path} has no ByteLevel decoder, so it does not decode the way tiktoken does")
    post = data.get("post_processor")
    if post is not None and post["type"] != "ByteLevel":
        raise MiniGPTError(f"{path} has a {post['type']} post-processor, which adds tokens minigpt's encode does not")


def _pattern(path: Path, pre: dict[str, Any] | None) -> str:
    """The tiktoken split pattern of a ByteLevel pre-tokenizer, alone or after a regex Split."""
    steps = pre["pretokenizers"] if pre and pre["type"] == "Sequence" else [pre]
    byte_level, split = steps[-1] or {}, steps[0] if len(steps) == 2 else None
    if byte_level.get("type") != "ByteLevel" or len(steps) > 2:
        raise MiniGPTError(f"{path} does not pre-tokenize with ByteLevel (after at most a regex Split) like GPT-2")
    if byte_level.get("add_prefix_space"):
        raise MiniGPTError(f"{path} sets add_prefix_space, a leading space tiktoken cannot add; set it to false")
    if split is None:
        if not byte_level.get("use_regex", True):
            raise MiniGPTError(f"{path} does not split its text into words, which tiktoken must do")
        return GPT2_PATTERN  # what ByteLevel splits with; equivalent to tiktoken's own gpt2 pattern
    if (
        split["type"] != "Split"
        or "Regex" not in split["pattern"]
        or split["behavior"] != "Isolated"
        or split["invert"]
        or byte_level.get("use_regex", True)
    ):
        raise MiniGPTError(f"{path} splits text in a way tiktoken cannot: only an Isolated regex Split, then ByteLevel")
    return from_oniguruma(split["pattern"]["Regex"])


def _encoding(
    path: Path,
    vocab: dict[str, int],
    merges: list[tuple[str, ...]],
    specials: dict[str, int],
    pattern: str,
    shortcut: bool,
) -> tiktoken.Encoding:
    """Check that tiktoken gives the ids of the Hugging Face BPE described by these parts, then build it."""
    if EOT not in specials:
        raise MiniGPTError(f"{path} has no special {EOT} token, which minigpt needs to separate documents")
    ranks = _ranks(path, vocab, specials)
    ids = list(specials.values())
    if not (all(type(i) is int for i in ids) and specials_follow_ranks(len(ranks), ids)):
        after = all(type(i) is int and i >= len(ranks) for i in ids) and len(set(ids)) == len(ids)
        where = "after a gap of unused ids (no token to decode)" if after else "before or among the others"
        raise MiniGPTError(f"{path} numbers its special tokens {where}; minigpt needs them right after the others")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise MiniGPTError(f"{path} does not number its ordinary tokens 0 to {len(ranks) - 1}, as minigpt needs")
    _check_merges(path, ranks, merges, shortcut)
    try:
        name = path.parent.name or "hf"
        return tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)
    except ValueError as err:  # the split pattern does not compile in fancy-regex
        raise MiniGPTError(f"{path} has a split pattern that tiktoken cannot compile ({err})") from None


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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MiniGPTError(f"cannot read {path}: {err}") from None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
