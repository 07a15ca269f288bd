import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from minigpt.errors import MiniGPTError
from minigpt.training.datamodule import FixedWindows, RandomWindows, TokenDataModule


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    np.arange(1000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(5000, 5300, dtype=np.uint16).tofile(tmp_path / "val.bin")
    return tmp_path


def take(stream: RandomWindows, n: int) -> list[torch.Tensor]:
    it = iter(stream)
    return [next(it) for _ in range(n)]


def test_training_windows_are_contiguous_slices_of_the_shard(shard_dir):
    (batch,) = take(RandomWindows(shard_dir, "uint16", block_size=8, batch_size=4, seed=1), 1)
    assert batch.shape == (4, 9) and batch.dtype == torch.int64
    # The shard holds 0..999, so every window is a run of consecutive numbers.
    assert torch.equal(batch[:, 1:] - batch[:, :-1], torch.ones(4, 8, dtype=torch.int64))


def test_window_order_is_reproducible_from_the_seed(shard_dir):
    a = take(RandomWindows(shard_dir, "uint16", 8, 4, seed=1), 5)
    b = take(RandomWindows(shard_dir, "uint16", 8, 4, seed=1), 5)
    c = take(RandomWindows(shard_dir, "uint16", 8, 4, seed=2), 5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_resumed_stream_continues_where_the_uninterrupted_one_is(shard_dir):
    whole = take(RandomWindows(shard_dir, "uint16", 8, 4, seed=3), 7)
    resumed = take(RandomWindows(shard_dir, "uint16", 8, 4, seed=3, start=4), 3)
    assert all(torch.equal(x, y) for x, y in zip(whole[4:], resumed))


def test_workers_together_yield_the_single_process_order(shard_dir):
    stream = RandomWindows(shard_dir, "uint16", 8, 4, seed=5)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    it = iter(loader)
    parallel = [next(it) for _ in range(6)]
    del it
    assert all(torch.equal(x, y) for x, y in zip(take(stream, 6), parallel))


def test_validation_windows_are_fixed_and_cover_the_shard(shard_dir):
    windows = FixedWindows(shard_dir, "uint16", block_size=16, count=10)
    assert len(windows) == 10
    assert windows[0][0].item() == 5000 and windows[9][-1].item() == 5299
    assert torch.equal(windows[3], FixedWindows(shard_dir, "uint16", 16, 10)[3])


def test_corpus_shorter_than_one_window_is_a_user_error(tmp_path):
    (tmp_path / "tiny.txt").write_text("too short " * 5)
    dm = TokenDataModule(
        str(tmp_path / "tiny.txt"), "bytes", block_size=64, batch_size=2, val_fraction=0.1, val_windows=8, seed=0,
        num_workers=0, cache_dir=str(tmp_path / "c"), val_data=None,
    )  # fmt: skip
    with pytest.raises(MiniGPTError, match="fewer than one window"):
        dm.prepare()


def test_more_validation_windows_than_offsets_gives_each_offset_once_without_a_huge_allocation(shard_dir):
    tracemalloc.start()
    try:
        windows = FixedWindows(shard_dir, "uint16", block_size=16, count=10_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(windows.offsets, np.arange(300 - 16))  # every window of the 300-token shard
    assert peak < 1 << 20
