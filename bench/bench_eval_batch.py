"""Validation batch size on a CPU: Lightning's validation of fixed windows in batches of each size, per model.

For each model shape (shakespeare_cpu's and default.yaml's by default) it validates the same `--windows` windows of
tiny-shakespeare's bytes with `trainer.validate` in batches of each `--batches` size, alternating for several
rounds, and prints the median seconds per size, marking the size `eval_batch_size` picks on a CPU and on a GPU.
Usage: python bench/bench_eval_batch.py [--batches 8 16 32 64 256] [--windows 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
from reference_loop import split  # this folder's
from torch.utils.data import DataLoader

from minigpt.training.datamodule import FixedWindows, eval_batch_size
from minigpt.training.module import LitGPT
from minigpt.training.run import quiet_lightning

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
SHAPES = {
    "shakespeare_cpu": dict(block_size=64, n_layer=2, batch=16),
    "default": dict(block_size=128, n_layer=4, batch=16),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64, 256])
    parser.add_argument("--windows", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    quiet_lightning()
    with tempfile.TemporaryDirectory() as folder:
        _, val = split(str(args.data))  # nanoGPT's validation split, as the reference loop takes it
        val.numpy().astype(np.uint16).tofile(Path(folder) / "val.bin")
        for name, shape in SHAPES.items():
            block, train_batch = shape["block_size"], shape["batch"]
            config = dict(vocab_size=257, block_size=block, n_layer=shape["n_layer"], n_head=4, n_embd=128, dropout=0.0)
            windows = FixedWindows(Path(folder), "uint16", block, args.windows)
            module = LitGPT(config, {})
            trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
            seconds: dict[int, list[float]] = {b: [] for b in args.batches}
            for _ in range(args.rounds):
                for batch in args.batches:
                    start = time.perf_counter()
                    trainer.validate(module, dataloaders=DataLoader(windows, batch_size=batch), verbose=False)
                    seconds[batch].append(time.perf_counter() - start)
            cpu, gpu = (eval_batch_size(train_batch, block, 257, device) for device in ("cpu", "cuda"))
            cells = [f"{b}: {statistics.median(s):.3f} s" for b, s in seconds.items()]
            print(f"{name} ({len(windows)} windows): " + ", ".join(cells) + f"; eval_batch_size picks {cpu} on a CPU, {gpu} on a GPU", flush=True)


if __name__ == "__main__":
    main()
