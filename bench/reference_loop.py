"""The hand-written PyTorch loop the benchmarks compare minigpt's command with: the floor a careful user writes.

It trains minigpt's GPT class on the bytes of a text (nanoGPT's 90/10 split) with AdamW (decayed matrices and
embeddings, undecayed biases and gains), linear warmup and cosine decay, clipping at 1.0, and evaluates on fixed
validation windows (`windows` evenly spaced over the validation split) every `every` steps, stopping early once
the loss is at most `target`. With `train_windows`, each evaluation also scores that many windows of the training
split, as nanoGPT's `estimate_loss` and minigpt's validation do (the gap shows memorisation). With `seconds` in the recipe it trains for that much wall time from process start
instead of `steps`: it times its first steps and the first evaluation, then sizes the cosine to end in time (how
nanoGPT's CPU recipe is "stretched" to a budget). The last line it prints is a JSON record of the run.

Usage: python bench/reference_loop.py DATA TARGET RECIPE_JSON
RECIPE keys: block batch steps warmup lr min_lr every windows run_steps n_layer n_head n_embd weight_decay betas
fused, and optionally train_windows and seconds.
"""

import json
import math
import sys
import time

START = time.perf_counter()

import numpy as np  # noqa: E402  (the clock starts before the imports, as a command's does)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from minigpt.model import GPT, GPTConfig  # noqa: E402


def windows_of(val: torch.Tensor, block: int, count: int) -> torch.Tensor:
    """`count` windows of block + 1 tokens evenly spaced over `val` (fewer if they coincide)."""
    offsets = np.unique(np.linspace(0, len(val) - block - 1, num=count).astype(np.int64))
    return torch.stack([val[o : o + block + 1] for o in offsets])


@torch.no_grad()
def window_loss(model: torch.nn.Module, windows: torch.Tensor, batch: int) -> float:
    """Mean next-token cross-entropy of `model` over every position of `windows`."""
    was_training = model.training
    model.eval()
    total = sum(
        F.cross_entropy(model(x[:, :-1]).flatten(0, 1).float(), x[:, 1:].flatten(), reduction="sum").item()
        for x in windows.split(batch)
    )
    model.train(was_training)
    return total / windows[:, 1:].numel()


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, train: torch.Tensor, block: int, batch: int) -> None:
    """One step on `batch` random windows of `train`: cross-entropy, backward, clipping at 1.0, the update."""
    ix = torch.randint(len(train) - block - 1, (batch,))
    x = torch.stack([train[i : i + block + 1] for i in ix])
    loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def split(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The bytes of the text at `path` as (training, validation) token ids, nanoGPT's 90/10 split."""
    data = np.frombuffer(open(path, "rb").read(), dtype=np.uint8)
    cut = int(len(data) * 0.9)
    return torch.from_numpy(data[:cut].astype(np.int64)), torch.from_numpy(data[cut:].astype(np.int64))


def main() -> None:
    path, target, recipe = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
    torch.manual_seed(1337)
    train, val = split(path)
    block, batch, steps, warmup = recipe["block"], recipe["batch"], recipe["steps"], recipe["warmup"]
    lr, min_lr, every, run_steps = recipe["lr"], recipe["min_lr"], recipe["every"], recipe["run_steps"]
    budget = recipe.get("seconds")
    config = GPTConfig(vocab_size=257, block_size=block, n_layer=recipe["n_layer"], n_head=recipe["n_head"],
                       n_embd=recipe["n_embd"], dropout=0.0)  # fmt: skip
    model = GPT(config)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": recipe["weight_decay"]}, {"params": rest, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=recipe["betas"], fused=recipe["fused"] or None)
    val_x = windows_of(val, block, recipe["windows"])
    train_x = windows_of(train, block, recipe["train_windows"]) if recipe.get("train_windows") else None

    def rate(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    history, step, timed_from = [], 0, 0.0
    while step < run_steps:
        step += 1
        for group in opt.param_groups:
            group["lr"] = rate(step - 1)
        train_step(model, opt, train, block, batch)
        if budget and step == 10:
            timed_from = time.perf_counter()
        if budget and step >= 60 and (step == 60 or (step % every == 0 and step < steps // 2)):
            # Size the run to end on time: the time left over the time per step so far (after the first ten),
            # evaluations included; re-sized at each evaluation of the first half, as the steps settle.
            per_step = (time.perf_counter() - timed_from) / (step - 10)
            if step == 60:  # no evaluation yet: one costs a forward pass per batch, a third of a step
                scored = len(val_x) + (len(train_x) if train_x is not None else 0)
                per_step *= 1 + scored / batch / 3 / every
            steps = run_steps = max(step + 1, int(step + (budget - (time.perf_counter() - START)) / per_step))
        if step % every == 0 or step == run_steps:
            v = window_loss(model, val_x, batch)
            history.append((step, round(v, 4)))
            seen = f" (training text: {window_loss(model, train_x, batch):.4f})" if train_x is not None else ""
            print(f"step {step}: val loss {v:.4f}{seen}", flush=True)
            if v <= target:
                break
    print(json.dumps({"steps": step, "history": history, "seconds": time.perf_counter() - START}))


if __name__ == "__main__":
    main()
