"""Starting a run from pretrained weights (`minigpt train --init`): the run takes the source model's shape and
tokenizer, refusing options that contradict them, and may use a shorter context than the source's. It
fine-tunes with AdamW unless --optim.name or a --config says otherwise: default.yaml's Muon is a recipe for
training from scratch, and its step size (--optim.muon_lr) ignores the small --optim.lr of fine-tuning."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from minigpt import tokenizer as tok
from minigpt.api import MiniGPT, load
from minigpt.errors import MiniGPTError
from minigpt.training.config import TrainConfig

SHAPE = ("n_layer", "n_head", "n_embd", "bias", "activation")  # what a pretrained start fixes

log = logging.getLogger(__name__)


def pretrained_start(config: TrainConfig) -> tuple[TrainConfig, MiniGPT | None]:
    """`config` as a run starting from --init's model trains it (with that model's shape and tokenizer), and the
    model; `config` itself and None for a run without --init, or one that resumes (its weights are the run's).
    Options set one by one (`config.given`) that contradict the model are refused; the context
    (--model.block_size) may be shorter than the model's: its position table is cropped."""
    if "init" in config.given and config.resume:
        raise MiniGPTError("--init starts a new run and --resume continues one: use one of them")
    if not config.init or config.resume:
        return config, None
    start = load(config.init)
    source = start.model.config
    for field in SHAPE:
        ours, theirs = getattr(config.model, field), getattr(source, field)
        if f"model.{field}" in config.given and ours != theirs:
            raise MiniGPTError(
                f"--model.{field} {ours} contradicts --init {config.init}, whose model has {field} {theirs}: "
                "leave it out (the shape comes from --init)"
            )
    block_size = config.model.block_size
    if block_size > source.block_size and "model.block_size" not in config.given:
        block_size = source.block_size  # a default or a config's context: the source's, if shorter
    if block_size > source.block_size:
        raise MiniGPTError(
            f"--model.block_size {block_size} is longer than the {source.block_size} positions of "
            f"--init {config.init}: use at most {source.block_size}"
        )
    if "tokenizer" in config.given:
        raise MiniGPTError(f"--tokenizer does not combine with --init: the tokenizer of {config.init} comes with it")
    model = replace(config.model, block_size=block_size, **{field: getattr(source, field) for field in SHAPE})
    optim = config.optim
    if optim.name != "adamw" and "optim.name" not in config.given and config.config is None:
        log.info("fine-tuning with AdamW (--optim.name %s is default.yaml's, for training from scratch)", optim.name)
        optim = replace(optim, name="adamw")
    # Names the encoding in config.yaml and in the shard cache's key; the digest keeps another model saved at
    # the same path later (with another tokenizer) from reusing these shards.
    tokenizer = f"from:{config.init}#{tok.digest(start.tokenizer)}"
    return replace(config, model=model, optim=optim, tokenizer=tokenizer), start


def cropped_weights(state: dict[str, Any], block_size: int) -> dict[str, Any]:
    """`state` with its position table cut to the first `block_size` positions."""
    return {k: v[:block_size] if k == "transformer.wpe.weight" else v for k, v in state.items()}
