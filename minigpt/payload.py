"""What `minigpt.training.module.LitGPT` puts into a checkpoint beside its weights, and under which names.

This belongs with the LightningModule, but lives in a module of its own that imports no Lightning:
`minigpt.checkpoint` reads these names, and `minigpt generate` / `attention` / `eval`, which load checkpoints
through it, must start without importing Lightning (tests/test_generate_cli.py checks the imports).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import tiktoken

from minigpt import tokenizer as tok
from minigpt.model import GPTConfig
from minigpt.data.shards import ShardMeta

MODEL_ATTR = "model"
"""The attribute that holds `LitGPT`'s `GPT` (``self.model``), so each weight's state-dict key starts with
`MODEL_PREFIX`."""
MODEL_PREFIX = MODEL_ATTR + "."


def checkpoint_payload(
    config: GPTConfig, enc: tiktoken.Encoding, train_config: dict[str, Any], data: ShardMeta | None = None
) -> dict[str, Any]:
    """The plain-data record stored beside the weights in every checkpoint: the model config, the tokenizer,
    the resolved training config and the shard meta of the data it trained on (empty when there was none)."""
    return {
        "model_config": asdict(config),
        "tokenizer": tok.to_dict(enc),
        "train_config": train_config,
        "data": data.to_json() if data is not None else {},
    }
