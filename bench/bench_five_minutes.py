"""The best model a laptop trains in five minutes: `minigpt train --config shakespeare_5min` against the
reference loop given nanoGPT's CPU recipe stretched to the same wall time.

(a) The whole command, as shipped (imports, preparation, validation, views, checkpoints, samples, model card).
(b) `bench/reference_loop.py` with nanoGPT's CPU recipe for character-level Shakespeare (4 layers x 4 heads x
    128, context 64, batch 12, AdamW lr 1e-3, 100 warmup steps, cosine to 1e-4, clipping 1.0), its cosine
    sized to end when the command's budget does (`--seconds`, from process start).
Both final models are scored on the same fixed validation windows: 512 windows of 64 tokens (and the next
one) evenly spaced over nanoGPT's 10% validation split of the bytes, every position counted; a model with a
longer context sees at most those 64 tokens. The two alternate for `--rounds`; each figure is printed.
Usage: python bench/bench_five_minutes.py [--rounds 1] [--seconds 300] [--config shakespeare_5min] [--data FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reference_loop import split, window_loss, windows_of  # this folder's

import minigpt

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
NANOGPT_CPU = dict(block=64, batch=12, steps=8000, warmup=100, lr=1e-3, min_lr=1e-4, every=250, windows=512, run_steps=8000,
                   n_layer=4, n_head=4, n_embd=128, weight_decay=0.1, betas=[0.9, 0.99], fused=False)  # fmt: skip
"""nanoGPT's CPU recipe; `seconds` is added to stretch it to the budget."""
WINDOWS, BLOCK = 512, 64


def command_run(config: str, data: Path, folder: Path) -> tuple[float, float, str]:
    """(wall seconds, the score of the run's best checkpoint on the shared windows, the command's last val line)."""
    command = [sys.executable, "-m", "minigpt", "train", "--config", config, "--data", str(data),
               "--cache_dir", str(folder / "cache"), "--out_dir", str(folder / "run")]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"minigpt train failed:\n{done.stderr[-3000:]}")
    lines = [line for line in (done.stdout + done.stderr).splitlines() if ": val loss" in line]
    model = minigpt.load(folder / "run").model
    _, val = split(str(data))
    return seconds, window_loss(model, windows_of(val, BLOCK, WINDOWS), 64), lines[-1] if lines else "no validation"


def reference_run(data: Path, seconds: float) -> tuple[float, float, int]:
    """(wall seconds, the final score on the shared windows, steps) of nanoGPT's recipe in the reference loop."""
    recipe = {**NANOGPT_CPU, "seconds": seconds}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("reference_loop.py")), str(data), "0", json.dumps(recipe)],
                          capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the reference loop failed:\n{done.stderr[-3000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, record["history"][-1][1], record["steps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=300.0, help="the reference loop's budget, from process start")
    parser.add_argument("--config", default="shakespeare_5min")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, score, line = command_run(args.config, args.data, Path(tmp))
        print(f"round {round_} minigpt {args.config}: {seconds:6.1f} s, {score:.4f} on the shared windows ({line})", flush=True)
        seconds, ref_score, steps = reference_run(args.data, args.seconds)
        print(f"round {round_} nanoGPT's CPU recipe: {seconds:6.1f} s, {ref_score:.4f} on the shared windows ({steps} steps)", flush=True)
        print(f"round {round_} minigpt - reference: {score - ref_score:+.4f} nats/byte", flush=True)


if __name__ == "__main__":
    main()
