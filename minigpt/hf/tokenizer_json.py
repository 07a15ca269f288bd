"""Reading a Hugging Face ``tokenizer.json`` (or GPT-2's ``vocab.json`` + ``merges.txt``) into the parts of a
byte-level BPE, every field checked for type and shape first: the file is hostile until then, and a field of
the wrong kind is one line naming the file and the key, never a traceback.

Only the stages tiktoken can reproduce are accepted (see `minigpt.hf.tokenizer`): a BPE model without byte
fallback, affixes or dropout; no normalizer; a ByteLevel pre-tokenizer, alone or after one Isolated regex
Split; a ByteLevel decoder; no post-processor but ByteLevel's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minigpt.errors import MiniGPTError
from minigpt.hf.regex_dialects import from_oniguruma, oniguruma_only
from minigpt.jsonfile import field, read_object
from minigpt.tokenizer import EOT, GPT2_PATTERN

_NONE = type(None)


@dataclass(frozen=True)
class BPEParts:
    """A byte-level BPE as a Hugging Face file describes it, each part of the right type (not yet checked
    against each other)."""

    vocab: dict[str, Any]  # token text -> id, ids checked where they are used
    merges: list[tuple[str, ...]]
    specials: dict[str, int]
    pattern: str  # a fancy-regex split pattern, as tiktoken reads it
    shortcut: bool  # ignore_merges: a whole piece found in the vocabulary is one token


def read_tokenizer_json(path: Path) -> BPEParts:
    """The parts of the byte-level BPE in `path`; MiniGPTError naming the file (and the key) for anything else."""
    data = read_object(path, str(path))
    model = field(data, "model", dict, str(path))
    _check_model(path, model)
    _check_pipeline(path, data)
    return BPEParts(
        vocab=field(model, "vocab", dict, f"{path} (model)"),
        merges=_merges(path, field(model, "merges", list, f"{path} (model)")),
        specials=_specials(path, field(data, "added_tokens", list, str(path))),
        pattern=_pattern(path, field(data, "pre_tokenizer", (dict, _NONE), str(path))),
        shortcut=bool(field(model, "ignore_merges", (bool, _NONE), f"{path} (model)")),
    )


def read_vocab_and_merges(vocab_path: Path, merges_path: Path) -> BPEParts:
    """GPT-2's older pair of files, read as GPT-2's: its split pattern and ``<|endoftext|>`` in the vocabulary."""
    vocab = read_object(vocab_path, str(vocab_path))
    try:
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise MiniGPTError(f"cannot read {merges_path}: {err}") from None
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    # GPT-2 keeps its one special token in vocab.json; the merges never build it.
    specials = {EOT: field(vocab, EOT, int, str(vocab_path))} if EOT in vocab else {}
    return BPEParts(vocab, merges, specials, GPT2_PATTERN, shortcut=False)


def _check_model(path: Path, model: dict[str, Any]) -> None:
    where = f"{path} (model)"
    kind = field(model, "type", str, where)
    if kind != "BPE":
        raise MiniGPTError(f"{path} holds a {kind} model, not a byte-level BPE; only GPT-2-style tokenizers convert")
    fallback = field(model, "byte_fallback", (bool, _NONE), where)
    prefix = field(model, "continuing_subword_prefix", (str, _NONE), where)
    suffix = field(model, "end_of_word_suffix", (str, _NONE), where)
    if fallback or prefix or suffix:
        raise MiniGPTError(f"{path} holds a SentencePiece-style BPE (byte fallback or affixes), not a byte-level one")
    if field(model, "dropout", (float, int, _NONE), where):
        raise MiniGPTError(f"{path} sets BPE dropout, which makes its ids random; set dropout to null")


def _check_pipeline(path: Path, data: dict[str, Any]) -> None:
    """Refuse every stage around the model that tiktoken cannot reproduce."""
    normalizer = field(data, "normalizer", (dict, _NONE), str(path))
    if normalizer is not None:
        kind = field(normalizer, "type", str, f"{path} (normalizer)")
        if kind != "Sequence" or field(normalizer, "normalizers", list, f"{path} (normalizer)"):
            raise MiniGPTError(f"{path} has a {kind} normalizer, which changes the text; tiktoken cannot")
    decoder = field(data, "decoder", (dict, _NONE), str(path))
    if decoder is None or field(decoder, "type", str, f"{path} (decoder)") != "ByteLevel":
        raise MiniGPTError(f"{path} has no ByteLevel decoder, so it does not decode the way tiktoken does")
    post = field(data, "post_processor", (dict, _NONE), str(path))
    if post is not None and (kind := field(post, "type", str, f"{path} (post_processor)")) != "ByteLevel":
        raise MiniGPTError(f"{path} has a {kind} post-processor, which adds tokens minigpt's encode does not")


def _specials(path: Path, added_tokens: list[Any]) -> dict[str, int]:
    specials = {}
    for n, added in enumerate(added_tokens):
        where = f"{path} (added_tokens[{n}])"
        if not isinstance(added, dict):
            raise MiniGPTError(f"{where}: each added token must be an object")
        content = field(added, "content", str, where)
        if not field(added, "special", bool, where):
            raise MiniGPTError(f"{path} adds the non-special token {content!r}, which tiktoken cannot match in text")
        specials[content] = field(added, "id", int, where)
    return specials


def _merges(path: Path, merges: list[Any]) -> list[tuple[str, ...]]:
    """Each merge as its parts: a "left right" string (older files) or a list of strings (newer ones)."""
    parts = []
    for n, merge in enumerate(merges, 1):
        if isinstance(merge, str):
            parts.append(tuple(merge.split(" ")))
        elif isinstance(merge, list) and all(isinstance(part, str) for part in merge):
            parts.append(tuple(merge))
        else:
            raise MiniGPTError(f"{path} (model): merge {n} must be a string or a list of strings")
    return parts


def _pattern(path: Path, pre: dict[str, Any] | None) -> str:
    """The tiktoken split pattern of a ByteLevel pre-tokenizer, alone or after a regex Split."""
    unsupported = f"{path} does not pre-tokenize with ByteLevel (after at most a regex Split) like GPT-2"
    if pre is None:
        raise MiniGPTError(unsupported)
    steps = [pre]
    if field(pre, "type", str, f"{path} (pre_tokenizer)") == "Sequence":
        steps = field(pre, "pretokenizers", list, f"{path} (pre_tokenizer)")
    if not 1 <= len(steps) <= 2 or not all(isinstance(step, dict) for step in steps):
        raise MiniGPTError(unsupported)
    where = f"{path} (pre_tokenizer)"
    byte_level = steps[-1]
    if field(byte_level, "type", str, where) != "ByteLevel":
        raise MiniGPTError(unsupported)
    if field(byte_level, "add_prefix_space", (bool, _NONE), where):
        raise MiniGPTError(f"{path} sets add_prefix_space, a leading space tiktoken cannot add; set it to false")
    use_regex = field(byte_level, "use_regex", (bool, _NONE), where) is not False  # ByteLevel's default: true
    if len(steps) == 1:
        if not use_regex:
            raise MiniGPTError(f"{path} does not split its text into words, which tiktoken must do")
        return GPT2_PATTERN  # what ByteLevel splits with; equivalent to tiktoken's own gpt2 pattern
    split = steps[0]
    pattern = field(split, "pattern", dict, where)
    if (
        field(split, "type", str, where) != "Split"
        or "Regex" not in pattern
        or field(split, "behavior", str, where) != "Isolated"
        or field(split, "invert", (bool, _NONE), where)
        or use_regex
    ):
        raise MiniGPTError(f"{path} splits text in a way tiktoken cannot: only an Isolated regex Split, then ByteLevel")
    regex = field(pattern, "Regex", str, f"{path} (pre_tokenizer pattern)")
    if different := oniguruma_only(regex):
        raise MiniGPTError(f"{path}: its split pattern uses {different}, so minigpt cannot give Hugging Face's ids")
    return from_oniguruma(regex)
