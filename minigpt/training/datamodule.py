"""Token windows for training: random windows from the train shard, fixed windows from the validation shard.

The training stream is a pure function of (seed, batch index), so it is reproducible, and resuming only
needs the number of batches already consumed, which Lightning restores as the global step.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import tiktoken
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from minigpt.data.prepare import prepare
from minigpt.data.shards import Prepared, ShardMeta
from minigpt.errors import MiniGPTError


def open_shard(folder: Path, split: str, dtype: str) -> np.memmap:
    """Memory-map ``{split}.bin`` (read-only), so no worker holds the corpus in memory."""
    return np.memmap(folder / f"{split}.bin", dtype=np.dtype(dtype), mode="r")


def rank_seed(seed: int, rank: int) -> int:
    """The seed of one distributed rank's stream: each rank draws its own windows (and dropout masks)."""
    return seed + 7919 * rank


def batch_seed(seed: int, batch: int) -> int:
    """A distinct, reproducible generator seed for every batch of a run."""
    return (seed * 1_000_003 + batch) % (2**63)


class RandomWindows(IterableDataset):
    """An endless stream of batches (B, block_size + 1) of windows at random offsets, from batch `start` on."""

    def __init__(self, folder: Path, dtype: str, block_size: int, batch_size: int, seed: int, start: int = 0):
        self.folder, self.dtype = folder, dtype
        self.block_size, self.batch_size = block_size, batch_size
        self.seed, self.start = seed, start

    def batch(self, tokens: np.ndarray, index: int) -> torch.Tensor:
        """Batch number `index` of the stream."""
        generator = torch.Generator().manual_seed(batch_seed(self.seed, index))
        span = self.block_size + 1
        offsets = torch.randint(0, len(tokens) - span + 1, (self.batch_size,), generator=generator)
        return torch.from_numpy(np.stack([tokens[o : o + span] for o in offsets.tolist()]).astype(np.int64))

    def __iter__(self):
        tokens = open_shard(self.folder, "train", self.dtype)
        worker = get_worker_info()
        # DataLoader takes batches from its workers in turn, so striding keeps the stream's order.
        step, first = (1, 0) if worker is None else (worker.num_workers, worker.id)
        index = self.start + first
        while True:
            yield self.batch(tokens, index)
            index += step


class FixedWindows(Dataset):
    """`count` windows spread evenly over the `split` shard: the same windows at every validation.

    A shard of n tokens has only n - block_size distinct windows, so a larger `count` gives each of them once.
    """

    def __init__(self, folder: Path, dtype: str, block_size: int, count: int, split: str = "val"):
        self.folder, self.dtype, self.block_size, self.split = folder, dtype, block_size, split
        n = len(open_shard(folder, split, dtype))
        # Capped before linspace allocates: a count above the distinct windows (n - block_size) selects all of them
        # anyway, so the windows of every count stay what they were, without a huge array for a huge count.
        count = min(count, max(n - block_size, 0))
        self.offsets = np.unique(np.linspace(0, n - block_size - 1, num=count).astype(np.int64))
        self._tokens: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._tokens is None:  # opened lazily so each worker maps the file itself
            self._tokens = open_shard(self.folder, self.split, self.dtype)
        o = int(self.offsets[i])
        return torch.from_numpy(self._tokens[o : o + self.block_size + 1].astype(np.int64))


EVAL_LOGITS = 1 << 25  # logits per evaluation batch on an accelerator (128 MiB in fp32)
CPU_EVAL_LOGITS = 1 << 19  # on a CPU (2 MiB in fp32): see eval_batch_size
MAX_EVAL_BATCH = 256


def eval_batch_size(batch_size: int, block_size: int, vocab_size: int, device_type: str = "cpu") -> int:
    """Windows per validation batch: the training batch, or more when the logits stay small. Validation has no
    gradients to hold, and on a GPU few large batches run much faster than many small ones. A CPU is fastest
    at batches that stay in its caches: validating 1,024 windows on 2 cores with 2 MiB of L2 each, the
    shakespeare_cpu model takes 0.58 s in batches of 32 and 0.77 s in batches of 256, default.yaml's model 2.1 s
    in batches of 16 and 3.1 s in batches of 256 (bench/bench_eval_batch.py)."""
    budget = CPU_EVAL_LOGITS if device_type == "cpu" else EVAL_LOGITS
    return max(batch_size, min(MAX_EVAL_BATCH, budget // (block_size * vocab_size)))


class TokenDataModule(L.LightningDataModule):
    """Prepares shards once (`prepare_data`), then serves windows of `block_size + 1` tokens."""

    def __init__(
        self,
        data: str,
        tokenizer: str,
        block_size: int,
        batch_size: int,
        *,
        val_fraction: float,
        val_windows: int,
        seed: int,
        num_workers: int,
        cache_dir: str | None,
        val_data: str | None,
        progress: bool = True,
        encoding: tiktoken.Encoding | None = None,
    ) -> None:  # the settings' defaults are TrainConfig's alone
        super().__init__()
        self.data, self.tokenizer, self.val_data = data, tokenizer, val_data
        self.val_fraction, self.cache_dir, self.progress = val_fraction, cache_dir, progress
        self.encoding = encoding  # a pretrained or resumed model's, used as it is (else built from `tokenizer`)
        self.block_size, self.batch_size = block_size, batch_size
        self.val_windows, self.seed, self.num_workers = val_windows, seed, num_workers
        self.prepared: Prepared | None = None

    def prepare(self) -> Prepared:
        """Tokenize the corpus (or reuse the cached shards) and check it is long enough to train on."""
        if self.prepared is None:
            cache = Path(self.cache_dir) if self.cache_dir else None
            self.prepared = prepare(
                self.data, self.tokenizer, cache, self.val_fraction, self.progress, self.val_data, self.encoding
            )
            self._check_lengths(self.prepared.meta)
        return self.prepared

    def _check_lengths(self, meta: ShardMeta) -> None:
        need = self.block_size + 1
        for split in ("train", "val"):
            if meta.split(split).tokens < need:
                raise MiniGPTError(
                    f"the {split} split of '{meta.source}' has {meta.split(split).tokens} tokens, fewer than one "
                    f"window of {need}: use more text or a smaller --model.block_size"
                )

    def prepare_data(self) -> None:
        self.prepare()

    def setup(self, stage: str) -> None:
        self.prepare()

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        # Batches already consumed by a resumed run; Lightning restores global_step before asking for data.
        start = trainer.global_step * trainer.accumulate_grad_batches if trainer is not None else 0
        p = self.prepare()
        stream = RandomWindows(p.dir, p.meta.dtype, self.block_size, self.batch_size, self._rank_seed(), start)
        return DataLoader(stream, batch_size=None, num_workers=self.num_workers, pin_memory=torch.cuda.is_available())

    def val_dataloader(self) -> list[DataLoader]:
        """The validation windows, then as many fixed windows of the training text: the gap between the two
        losses shows how much the model memorises its training text."""
        p = self.prepare()
        device = self.trainer.strategy.root_device.type if self.trainer is not None else "cpu"
        batch = eval_batch_size(self.batch_size, self.block_size, p.meta.vocab_size, device)
        return [
            DataLoader(
                FixedWindows(p.dir, p.meta.dtype, self.block_size, self.val_windows, split),
                batch_size=batch, num_workers=self.num_workers,
            )  # fmt: skip
            for split in ("val", "train")
        ]

    def _rank_seed(self) -> int:
        return rank_seed(self.seed, self.trainer.global_rank if self.trainer is not None else 0)
