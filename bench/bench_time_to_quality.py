"""Time to a good model: wall time from process start until the validation loss is at most a target.

(a) A reference loop in plain PyTorch, the floor a careful user writes by hand: nanoGPT's CPU recipe for
    character-level Shakespeare (4 layers x 4 heads x 128, context 64, batch 12, AdamW lr 1e-3 with 100
    warmup steps and cosine decay over 2000, weight decay 0.1, clipping 1.0), the same GPT class, bytes as
    tokens, nanoGPT's 90/10 split, and an evaluation every 250 steps on fixed windows of both splits (as
    nanoGPT's `estimate_loss`).
(b) The real `minigpt train --config shakespeare_cpu` command, as shipped (its own recipe and stop).
(c) The engine pair: the same reference loop given exactly the shipped recipe (shape, batch, lr, warmup,
    cosine sized for the config's max_steps, min lr, betas, weight decay, clipping, fused AdamW, validation
    cadence and window counts: minigpt's validation also scores as many windows of the training text), run
    for the number of steps (b) took. (b) / (a) measures the recipe;
    (b) / (c) measures the engine: the command, Lightning included, against a careful hand-written loop.

Each runs in a fresh process (imports, preparation, validation, samples: everything counts), the three
alternating for several rounds; the medians and their ratios are reported, and for the engine pair the
median of each round's own ratio too (the machine's speed drifts between rounds more than within one).
`--python` runs every side with another interpreter: a user's install has none of the test dependencies
(transformers, scikit-learn) that Lightning's torchmetrics imports when they are there, ~1 s of start-up in
the development virtualenv.
Usage: python bench/bench_time_to_quality.py [--rounds 3] [--target 1.89] [--data FILE] [--engine-only]
       [--python INTERPRETER]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"

REFERENCE = str(Path(__file__).with_name("reference_loop.py"))
"""The reference loop (`bench/reference_loop.py`): DATA TARGET RECIPE_JSON."""

NANOGPT = dict(block=64, batch=12, steps=2000, warmup=100, lr=1e-3, min_lr=1e-4, every=250, windows=512, train_windows=512,
               run_steps=2000, n_layer=4, n_head=4, n_embd=128, weight_decay=0.1, betas=[0.9, 0.99], fused=False)  # fmt: skip
"""nanoGPT's CPU recipe for character-level Shakespeare, as nanoGPT's README gives it (its AdamW is not fused)."""


def shipped_recipe(run_steps: int) -> dict:
    """The bundled shakespeare_cpu recipe as the reference loop's settings, run for `run_steps` steps."""
    config = yaml.safe_load((REPO / "minigpt" / "configs" / "shakespeare_cpu.yaml").read_text())
    model, optim, trainer = config["model"], config["optim"], config["trainer"]
    return dict(block=model["block_size"], batch=config["batch_size"], steps=trainer["max_steps"], warmup=optim["warmup_steps"],
                lr=optim["lr"], min_lr=optim["lr"] * optim["min_lr_ratio"], every=trainer["val_check_interval"],
                windows=config["val_windows"], train_windows=config["val_windows"], run_steps=run_steps, n_layer=model["n_layer"], n_head=model["n_head"],
                n_embd=model["n_embd"], weight_decay=optim["weight_decay"], betas=[optim["beta1"], optim["beta2"]], fused=True)  # fmt: skip


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command[:3]} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def last_validation(output: str) -> str:
    lines = [line for line in output.splitlines() if ": val loss" in line]
    return lines[-1].split(" nats")[0].replace(": val loss", ", val") if lines else "no validation"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target", type=float, default=1.89, help="validation loss to reach, nats per byte")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--engine-only", action="store_true", help="skip (a): time only the command and the same-recipe loop")
    parser.add_argument("--python", default=sys.executable, help="the interpreter every side runs with")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"reference": [], "minigpt": [], "same recipe": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(1, args.rounds + 1):
            folder = Path(tmp) / str(round_)
            folder.mkdir()
            runs = {
                "reference": [args.python, REFERENCE, str(args.data), str(args.target), json.dumps(NANOGPT)],
                "minigpt": [args.python, "-m", "minigpt", "train", "--config", "shakespeare_cpu", "--data", str(args.data),
                            "--cache_dir", str(folder / "cache"), "--out_dir", str(folder / "run")],
            }  # fmt: skip
            if args.engine_only:
                del runs["reference"]
            for name, command in runs.items():
                seconds, output = timed(command, folder)
                times[name].append(seconds)
                print(f"round {round_} {name:>11}: {seconds:6.1f} s ({last_validation(output)})", flush=True)
            steps = last_step(output)
            same = [args.python, REFERENCE, str(args.data), "0", json.dumps(shipped_recipe(steps))]
            seconds, output = timed(same, folder)
            times["same recipe"].append(seconds)
            print(f"round {round_} same recipe: {seconds:6.1f} s ({steps} steps, {last_validation(output)})", flush=True)
    median = {name: statistics.median(values) for name, values in times.items() if values}
    print(f"median: minigpt {median['minigpt']:.1f} s, reference loop on minigpt's recipe {median['same recipe']:.1f} s"
          + (f", reference {median['reference']:.1f} s" if "reference" in median else ""))  # fmt: skip
    if "reference" in median:
        print(f"recipe: minigpt / reference = {median['minigpt'] / median['reference']:.2f}")
    paired = statistics.median(a / b for a, b in zip(times["minigpt"], times["same recipe"]))
    print(f"engine: minigpt / same-recipe loop = {median['minigpt'] / median['same recipe']:.2f} "
          f"(median of the rounds' own ratios: {paired:.2f})")  # fmt: skip


def last_step(output: str) -> int:
    """The step of the minigpt command's last validation: how many steps the same-recipe loop runs."""
    lines = [line for line in output.splitlines() if ": val loss" in line]
    if not lines:
        raise SystemExit("the minigpt run printed no validation")
    return int(lines[-1].split(":")[0].split()[-1].split("/")[0])

if __name__ == "__main__":
    main()
