"""The shard folder's record: `ShardMeta` reads every meta.json written since format 2 and writes the same JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minigpt.data import shards
from minigpt.data.shards import ShardMeta, SplitStats
from tests.helpers import WRITTEN_BEFORE

# A meta.json as minigpt wrote it before ShardMeta existed (format 2, with a separate validation corpus).


def test_a_meta_json_written_before_shardmeta_reads_and_writes_back_unchanged() -> None:
    meta = ShardMeta.from_json(WRITTEN_BEFORE)
    assert meta.val == SplitStats(tokens=210, n_bytes=209, sha256="2" * 64) and meta.val_source == "data/val.txt"
    assert meta.to_json() == WRITTEN_BEFORE
    assert list(meta.to_json()) == list(WRITTEN_BEFORE)  # the same key order, so the files read the same too


def test_without_a_validation_corpus_there_is_no_val_source_key() -> None:
    record = {k: v for k, v in WRITTEN_BEFORE.items() if k != "val_source"}
    meta = ShardMeta.from_json(record)
    assert meta.val_source is None and meta.to_json() == record


def test_bytes_per_token_turns_nats_per_token_into_nats_per_byte() -> None:
    assert ShardMeta.from_json(WRITTEN_BEFORE).val.bytes_per_token == 209 / 210


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"train_tokens": "many"}, "has no int train_tokens"),
        ({"val_sha256": None}, "has no str val_sha256"),
        ({"dtype": "float32"}, "has an unknown dtype 'float32'"),
        ({"format_version": 1}, "has format version 1, not 2"),
    ],
)
def test_a_damaged_record_names_its_first_problem(change: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ShardMeta.from_json({**WRITTEN_BEFORE, **change})


def test_write_puts_the_record_where_verification_reads_it(tmp_path: Path) -> None:
    shards.write(tmp_path, ShardMeta.from_json(WRITTEN_BEFORE))
    assert json.loads((tmp_path / shards.META_FILE).read_text()) == WRITTEN_BEFORE
