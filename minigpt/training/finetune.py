"""Starting a run from pretrained weights (`minigpt train --init`): the run takes the source model's shape and
tokenizer, refusing options that contradict them, and may use a shorter context than the source's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from minigpt import checkpoint
from minigpt import tokenizer as tok
from minigpt.errors import MiniGPTError

if TYPE_CHECKING:
    from jsonargparse import Namespace

SHAPE = ("n_layer", "n_head", "n_embd", "bias", "activation")  # what a pretrained start fixes


def pretrained_start(cfg: Namespace, given: set[str]) -> checkpoint.Loaded:
    """Load --init's model and make `cfg` take its shape and tokenizer, refusing options that contradict them.
    The context (--model.block_size) may be shorter than the source's: its position table is cropped."""
    from minigpt import sources

    start = sources.load(cfg.init)
    source = start.model.config
    for field in SHAPE:
        ours, theirs = getattr(cfg.model, field), getattr(source, field)
        if f"model.{field}" in given and ours != theirs:
            raise MiniGPTError(
                f"--model.{field} {ours} contradicts --init {cfg.init}, whose model has {field} {theirs}: "
                "leave it out (the shape comes from --init)"
            )
        setattr(cfg.model, field, theirs)
    if cfg.model.block_size > source.block_size and "model.block_size" not in given:
        cfg.model.block_size = source.block_size  # a default or a config's context: the source's, if shorter
    if cfg.model.block_size > source.block_size:
        raise MiniGPTError(
            f"--model.block_size {cfg.model.block_size} is longer than the {source.block_size} positions of "
            f"--init {cfg.init}: use at most {source.block_size}"
        )
    if "tokenizer" in given:
        raise MiniGPTError(f"--tokenizer does not combine with --init: the tokenizer of {cfg.init} comes with it")
    # Names the encoding in config.yaml and in the shard cache's key; the digest keeps another model saved at
    # the same path later (with another tokenizer) from reusing these shards.
    cfg.tokenizer = f"from:{cfg.init}#{tok.digest(start.tokenizer)}"
    return start


def cropped_weights(state: dict[str, Any], block_size: int) -> dict[str, Any]:
    """`state` with its position table cut to the first `block_size` positions."""
    return {k: v[:block_size] if k == "transformer.wpe.weight" else v for k, v in state.items()}
