"""What LitGPT writes into a checkpoint: the payload's contents and the name its weights are saved under."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict

from minigpt import tokenizer as tok
from minigpt.payload import MODEL_PREFIX, checkpoint_payload
from tests.helpers import REPO, tiny_config
from tests.helpers import WRITTEN_BEFORE


def test_every_weight_of_the_lightning_module_is_saved_under_the_model_prefix() -> None:
    from minigpt.training.module import LitGPT

    module = LitGPT(asdict(tiny_config()), {})
    names = list(module.state_dict())
    assert names and all(name.startswith(MODEL_PREFIX) for name in names)
    assert {name.removeprefix(MODEL_PREFIX) for name in names} == set(module.model.state_dict())


def test_the_payload_holds_the_shard_meta_as_the_json_of_meta_json() -> None:
    from minigpt.data.shards import ShardMeta

    enc = tok.byte_tokenizer()
    payload = checkpoint_payload(tiny_config(), enc, {"seed": 1}, ShardMeta.from_json(WRITTEN_BEFORE))
    assert payload["data"] == WRITTEN_BEFORE and payload["train_config"] == {"seed": 1}
    assert payload["model_config"] == asdict(tiny_config()) and tok.from_dict(payload["tokenizer"]).n_vocab == 257


def test_the_payload_module_imports_no_lightning() -> None:
    """checkpoint.py imports it, and generate must start without Lightning."""
    code = "import sys, minigpt.payload, minigpt.checkpoint; print(any(m.startswith('lightning') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
