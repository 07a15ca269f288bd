"""What `minigpt.training.module.LitGPT` puts into a checkpoint beside its weights (the `Payload` record), and
under which names.

This belongs with the LightningModule, but lives in a module of its own that imports no Lightning:
`minigpt.checkpoint` reads the payload, and `minigpt generate` / `attention` / `eval`, which load checkpoints
through it, must start without importing Lightning (tests/test_generate_cli.py checks the imports).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import tiktoken

from minigpt import tokenizer as tok
from minigpt.data.prepare import DEFAULT_VAL_FRACTION
from minigpt.data.shards import ShardMeta
from minigpt.jsonfile import show
from minigpt.model import GPTConfig

log = logging.getLogger(__name__)

MODEL_ATTR = "model"
"""The attribute that holds `LitGPT`'s `GPT` (``self.model``), so each weight's state-dict key starts with
`MODEL_PREFIX`."""
MODEL_PREFIX = MODEL_ATTR + "."
_REQUIRED_CONFIG = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")


@dataclass(frozen=True)
class Payload:
    """The plain-data record stored beside the weights in every checkpoint: what rebuilds the model and its
    tokenizer, and what describes the run that trained it. Building one checks that its parts agree."""

    model_config: GPTConfig
    tokenizer: tiktoken.Encoding
    train_config: dict[str, Any] = field(default_factory=dict)
    """The run's resolved training config (empty when a checkpoint holds none)."""
    data: ShardMeta | None = None
    """The shard meta of the data it trained on (None when there was none, or an older minigpt wrote it)."""

    def __post_init__(self) -> None:
        if self.tokenizer.n_vocab != self.model_config.vocab_size:
            raise ValueError(
                f"its tokenizer has {self.tokenizer.n_vocab} tokens but the model has {self.model_config.vocab_size}"
            )
        self.check_agrees(self.train_config.get("model"), "training config")

    @property
    def val_fraction(self) -> float:
        """The share of its corpus the run held out for validation, else train's default (older runs record none)."""
        value = self.train_config.get("val_fraction")
        if type(value) in (int, float):  # not bool, which is an int too
            return float(value)
        log.info("the checkpoint does not record its val_fraction: splitting with %g", DEFAULT_VAL_FRACTION)
        return DEFAULT_VAL_FRACTION

    def check_agrees(self, other: Any, source: str) -> None:
        """Raise ValueError when `other`, another record of the model's shape (from `source`), disagrees with
        `model_config`: fields like n_head change the model without changing any weight's shape."""
        if not isinstance(other, dict):
            return
        for key, value in asdict(self.model_config).items():
            if key not in other:
                continue
            theirs = other[key]  # anything a pickle may hold: a tensor would not even compare
            if type(theirs) not in (bool, int, float, str) or theirs != value:
                raise ValueError(f"model_config says {key}={value!r} but its {source} says {show(theirs)}")

    def to_dict(self) -> dict[str, Any]:
        """The plain data (str, int, float, bytes, list, dict) a checkpoint stores: `from_dict` reads it back."""
        return {
            "model_config": asdict(self.model_config),
            "tokenizer": tok.to_dict(self.tokenizer),
            "train_config": self.train_config,
            "data": self.data.to_json() if self.data is not None else {},
        }

    @classmethod
    def from_dict(cls, data: Any) -> Payload:
        """The record `to_dict` wrote (as every minigpt did); a ValueError names the first problem, checked before
        anything is built from it (a config asking for terabytes allocates nothing)."""
        config = model_config_of(data)
        train_config = data.get("train_config")
        return cls(
            config,
            tok.from_dict(data["tokenizer"]),
            train_config if isinstance(train_config, dict) else {},
            data_of(data),
        )


def model_config_of(data: Any) -> GPTConfig:
    """The checked model config of a payload dict, built before anything else of it: what a checkpoint's weights
    are checked against (ValueError naming the first problem)."""
    if not isinstance(data, dict) or not {"model_config", "tokenizer"} <= data.keys():
        raise ValueError("its payload lacks model_config or tokenizer")
    raw = data["model_config"]
    if not isinstance(raw, dict):
        raise ValueError("model_config is not a mapping")
    known = {f.name for f in fields(GPTConfig)}
    unknown = sorted(set(raw) - known, key=str)
    if unknown:
        raise ValueError(f"model_config has unknown key {unknown[0]!r}")
    missing = sorted(set(_REQUIRED_CONFIG) - set(raw))
    if missing:
        raise ValueError(f"model_config lacks {missing[0]!r}")
    return GPTConfig(**raw)


def data_of(data: dict[str, Any]) -> ShardMeta | None:
    """The shard meta of a payload dict, read without building its tokenizer; None for none (``{}``) and for an
    older format, which no reader needs to load."""
    raw = data.get("data")
    try:
        return ShardMeta.from_json(raw) if raw else None
    except ValueError:
        return None
