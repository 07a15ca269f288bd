"""Sweep training recipes for character-level Shakespeare on a CPU in a plain PyTorch loop, by steps.

Each variant trains minigpt's GPT on the bytes of the text (nanoGPT's 90/10 split) with the optimizer the
training wing builds (`--optim.name adamw|muon`), its lr schedule, gradient clipping 1.0, and reports the loss
on fixed validation windows (evenly spaced over the validation split, as `--val_windows` takes them) every
`--every` steps. The loss after N steps does not depend on the machine's speed, so variants run side by side,
one thread each (`--jobs`), and a budget of wall time becomes a budget of steps with `--calibrate`, which times
each variant's step alone on every core. Usage:

    python bench/sweep_recipe.py --calibrate --variant a:n_layer=4,n_embd=192 --variant b:batch=32
    python bench/sweep_recipe.py --steps 4000 --jobs 2 --variant a:n_layer=4,n_embd=192,lr=3e-3 ...
    python bench/sweep_recipe.py --seconds 280 --variant a:...   # steps = 280 s / the calibrated step time

Settings (defaults = the shipped shakespeare_cpu recipe): n_layer n_head n_embd block batch lr min_ratio warmup
schedule (cosine|wsd) decay_fraction optim (adamw|muon) muon_lr weight_decay beta2 dropout, and steps (this
variant's own step count).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"

DEFAULTS = dict(n_layer=2, n_head=4, n_embd=128, block=64, batch=16, lr=5e-3, min_ratio=0.1, warmup=50,
                schedule="cosine", decay_fraction=0.2, optim="adamw", muon_lr=0.02, weight_decay=0.1, beta2=0.99,
                dropout=0.0, steps=0)  # fmt: skip


def parse_variant(text: str) -> tuple[str, dict]:
    """`name:key=value,key=value` -> (name, the recipe with those settings over the defaults)."""
    name, _, settings = text.partition(":")
    recipe = dict(DEFAULTS)
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        if key not in DEFAULTS:
            raise SystemExit(f"unknown setting {key!r} in {text!r}; known: {', '.join(DEFAULTS)}")
        recipe[key] = type(DEFAULTS[key])(value)
    return name, recipe


def train(data_path: str, recipe: dict, steps: int, every: int, windows: int, threads: int, seed: int) -> dict:
    """Train one recipe for `steps` steps in this process; the validation losses and the step time."""
    import torch
    from reference_loop import split, train_step, window_loss, windows_of  # this folder's: the same loop

    from minigpt.model import GPT, GPTConfig
    from minigpt.training.module import lr_factor
    from minigpt.training.optim import MuonAdamW, adamw_groups, hidden_matrices

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train_ids, val_ids = split(data_path)
    block, batch = recipe["block"], recipe["batch"]
    config = GPTConfig(vocab_size=257, block_size=block, n_layer=recipe["n_layer"], n_head=recipe["n_head"],
                       n_embd=recipe["n_embd"], dropout=recipe["dropout"])  # fmt: skip
    model = GPT(config)
    adamw = {"lr": recipe["lr"], "betas": (0.9, recipe["beta2"]), "fused": True}
    if recipe["optim"] == "muon":
        hidden, other = hidden_matrices(model)
        muon = {"lr": recipe["muon_lr"], "weight_decay": recipe["weight_decay"]}
        opt = MuonAdamW(adamw_groups(other, recipe["weight_decay"]), hidden, adamw, muon)
    else:
        opt = torch.optim.AdamW(adamw_groups(list(model.parameters()), recipe["weight_decay"]), **adamw)
    factor = functools.partial(lr_factor, warmup_steps=min(recipe["warmup"], steps), total_steps=steps,
                               min_ratio=recipe["min_ratio"], schedule=recipe["schedule"],
                               decay_fraction=recipe["decay_fraction"])  # fmt: skip
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    val_x = windows_of(val_ids, block, windows)
    history, step_seconds, warm = [], 0.0, min(10, steps // 2)
    for step in range(1, steps + 1):
        start = time.perf_counter()
        train_step(model, opt, train_ids, block, batch)
        schedule.step()
        if step > warm:  # the first steps warm up the allocator and caches
            step_seconds += time.perf_counter() - start
        if step % every == 0 or step == steps:
            history.append((step, round(window_loss(model, val_x, 64), 4)))
    return {"history": history, "ms_per_step": 1000 * step_seconds / (steps - warm), "params": sum(p.numel() for p in model.parameters())}


def run_child(args: argparse.Namespace, name: str, recipe: dict, steps: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", json.dumps(recipe), "--steps", str(steps), "--every", str(args.every),
               "--windows", str(args.windows), "--threads", str(threads), "--data", str(args.data), "--seed", str(args.seed)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"name": name, "error": done.stderr.strip().splitlines()[-1:]}
    return {"name": name, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="name:key=value,...")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seconds", type=float, help="steps = this many seconds of the variant's calibrated step")
    parser.add_argument("--calibrate", action="store_true", help="time each variant's step alone, on every core")
    parser.add_argument("--every", type=int, default=250, help="validate every this many steps")
    parser.add_argument("--windows", type=int, default=512, help="validation windows")
    parser.add_argument("--jobs", type=int, default=2, help="variants trained at once, one thread each")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train(str(args.data), json.loads(args.child), args.steps, args.every, args.windows, args.threads, args.seed)))
        return
    variants = [parse_variant(v) for v in args.variant] or [("shipped", dict(DEFAULTS))]
    if args.calibrate or args.seconds:
        import torch

        cores = torch.get_num_threads()
        for name, recipe in variants:  # one at a time: the step time on an otherwise idle machine
            timed = run_child(argparse.Namespace(**{**vars(args), "every": 10**9}), name, recipe, 60, cores)
            recipe["ms"] = timed.get("ms_per_step")
            print(f"{name}: {recipe['ms']:.1f} ms/step on {cores} threads ({timed.get('params', 0) / 1e6:.2f}M parameters)", flush=True)
        if not args.seconds:
            return

    def one(item: tuple[str, dict]) -> dict:
        name, recipe = item
        steps = int(args.seconds * 1000 / recipe.pop("ms")) if args.seconds else recipe["steps"] or args.steps
        result = run_child(args, name, recipe, steps, 1)
        line = " ".join(f"{s}:{v:.3f}" for s, v in result.get("history", []))
        print(f"{name:>14} {steps:6d} steps  {line or result.get('error')}", flush=True)
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, variants))
    best = min((r for r in results if "history" in r), key=lambda r: r["history"][-1][1], default=None)
    if best:
        print(f"best: {best['name']} at {best['history'][-1][1]:.4f}")


if __name__ == "__main__":
    main()
