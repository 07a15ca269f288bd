"""What LitGPT writes into a checkpoint: the payload record, its on-disk form, and the name its weights are saved
under."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict

import pytest

from minigpt import tokenizer as tok
from minigpt.data.prepare import DEFAULT_VAL_FRACTION
from minigpt.data.shards import ShardMeta
from minigpt.payload import MODEL_PREFIX, Payload
from tests.helpers import REPO, WRITTEN_BEFORE, tiny_config


def test_every_weight_of_the_lightning_module_is_saved_under_the_model_prefix() -> None:
    from minigpt.training.module import LitGPT

    module = LitGPT(asdict(tiny_config()), {})
    names = list(module.state_dict())
    assert names and all(name.startswith(MODEL_PREFIX) for name in names)
    assert {name.removeprefix(MODEL_PREFIX) for name in names} == set(module.model.state_dict())


def old_payload_dict(**changes) -> dict:
    """A payload as minigpt wrote it before the `Payload` record existed (the plain dict of `checkpoint_payload`)."""
    return {
        "model_config": asdict(tiny_config()),
        "tokenizer": tok.to_dict(tok.byte_tokenizer()),
        "train_config": {"seed": 1, "val_fraction": 0.25},
        "data": WRITTEN_BEFORE,
        **changes,
    }


def test_the_payload_holds_the_shard_meta_as_the_json_of_meta_json() -> None:
    enc = tok.byte_tokenizer()
    payload = Payload(tiny_config(), enc, {"seed": 1}, ShardMeta.from_json(WRITTEN_BEFORE)).to_dict()
    assert payload["data"] == WRITTEN_BEFORE and payload["train_config"] == {"seed": 1}
    assert payload["model_config"] == asdict(tiny_config()) and tok.from_dict(payload["tokenizer"]).n_vocab == 257


def test_a_payload_written_the_old_way_reads_into_the_record_and_writes_back_byte_for_byte() -> None:
    old = old_payload_dict()
    payload = Payload.from_dict(old)
    assert payload.model_config == tiny_config() and payload.tokenizer.n_vocab == 257
    assert payload.train_config == old["train_config"] and payload.data == ShardMeta.from_json(WRITTEN_BEFORE)
    assert payload.to_dict() == old


def test_a_payload_without_data_or_training_config_reads_with_empty_ones() -> None:
    payload = Payload.from_dict({**old_payload_dict(data={}), "train_config": None})
    assert payload.data is None and payload.train_config == {}
    assert payload.to_dict()["data"] == {}


def test_data_in_an_older_shard_format_does_not_stop_the_payload_loading() -> None:
    assert Payload.from_dict(old_payload_dict(data={**WRITTEN_BEFORE, "format_version": 1})).data is None


def test_the_val_fraction_is_the_runs_else_the_one_default() -> None:
    assert Payload.from_dict(old_payload_dict()).val_fraction == 0.25
    assert Payload.from_dict(old_payload_dict(train_config={"seed": 1})).val_fraction == DEFAULT_VAL_FRACTION


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model_config": [1]}, "model_config is not a mapping"),
        ({"model_config": asdict(tiny_config(vocab_size=300))}, "tokenizer has 257 tokens but the model has 300"),
        ({"train_config": {"model": {"n_head": 4}}}, "n_head=2 but its training config says 4"),
    ],
)  # fmt: skip
def test_a_payload_whose_parts_disagree_is_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Payload.from_dict(old_payload_dict(**changes))


def test_the_payload_module_imports_no_lightning() -> None:
    """checkpoint.py imports it, and generate must start without Lightning."""
    code = "import sys, minigpt.payload, minigpt.checkpoint; print(any(m.startswith('lightning') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
