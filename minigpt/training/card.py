"""What a finished run leaves for people: completions printed from its best checkpoint, and the run folder's
README.md model card (`model_card`) with this run's facts and its best validation."""

from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from minigpt import checkpoint
from minigpt.model import GPTConfig

if TYPE_CHECKING:
    import lightning as L
    from jsonargparse import Namespace

    from minigpt.data.prepare import Prepared


def print_samples(run_dir: Path, count: int, tokens: int, seed: int) -> list[str]:
    """Print `count` completions from the run's best checkpoint, the way `minigpt generate` would; return them."""
    from minigpt.sample import SamplingSettings, generate

    if count < 1:
        return []
    path = best_checkpoint(run_dir)
    loaded = checkpoint.load(path)
    texts = generate(loaded.model, loaded.tokenizer, "", SamplingSettings(max_new_tokens=tokens, num_samples=count, seed=seed))
    for i, text in enumerate(texts):
        print(f"--- sample {i + 1} ---\n{text}")
    print(f"--- sample more with: minigpt generate --ckpt {path} --prompt '...'")
    return list(texts)


def best_checkpoint(run_dir: Path) -> Path:
    return run_dir / "best.ckpt" if (run_dir / "best.ckpt").exists() else run_dir / "last.ckpt"


def write_model_card(run_dir: Path, cfg: Namespace, prepared: Prepared, trainer: L.Trainer, seconds: float, samples: list[str]) -> None:
    """The run folder's README.md (see `model_card`): this run's facts and its best validation."""
    from minigpt.training.callbacks.checkpoints import BestCheckpoint
    from minigpt.training.callbacks.progress import duration

    score = next(c for c in trainer.callbacks if isinstance(c, BestCheckpoint)).best_model_score
    val_loss = float(score) if score is not None else float("nan")
    meta, model = prepared.meta, cfg.model
    facts = {
        "name": run_dir.name, "folder": run_dir, "data": cfg.data, "tokenizer": cfg.tokenizer,
        "vocab_size": prepared.tokenizer.n_vocab, "train_tokens": meta.train.tokens, "val_tokens": meta.val.tokens,
        "params": GPTConfig(**vars(model), vocab_size=prepared.tokenizer.n_vocab).num_parameters(),
        "n_layer": model.n_layer, "n_head": model.n_head, "n_embd": model.n_embd, "block_size": model.block_size,
        "steps": trainer.global_step, "batch_size": cfg.batch_size, "devices": trainer.world_size,
        "val_loss": val_loss, "val_bpb": val_loss / meta.val.bytes_per_token / math.log(2),
        "wall_time": duration(seconds),
    }  # fmt: skip
    (run_dir / "README.md").write_text(model_card(facts, samples))


def model_card(facts: Mapping[str, Any], samples: list[str]) -> str:
    """The README.md of a run folder: what was trained on what, how well, and how to use it."""
    f = facts
    lines = [
        f"# {f['name']}",
        "",
        f"A {f['params'] / 1e6:.2f}M-parameter GPT ({f['n_layer']} layers, {f['n_head']} heads, {f['n_embd']} wide, "
        f"context {f['block_size']}) trained with minigpt.",
        "",
        "| | |",
        "| --- | --- |",
        f"| data | `{f['data']}` ({f['train_tokens']:,} training / {f['val_tokens']:,} validation tokens) |",
        f"| tokenizer | `{f['tokenizer']}` ({f['vocab_size']:,} tokens) |",
        f"| steps | {f['steps']:,} ({f['batch_size']} windows per batch × {f['devices']} process{'es' if f['devices'] > 1 else ''}) |",
        f"| validation loss | {f['val_loss']:.4f} nats/token, {f['val_bpb']:.4f} bits/byte (best checkpoint) |",
        f"| wall time | {f['wall_time']} |",
        "",
        "Training and validation loss: `loss.png` (numbers in `metrics.csv`, everything in `tensorboard --logdir tb`).",
        "",
        "```",
        f"minigpt generate --ckpt {f['folder']} --prompt '...'",
        f"minigpt attention --ckpt {f['folder']} --prompt '...' --out attention/",
        f"minigpt eval --ckpt {f['folder']} --data {f['data']} --split val",
        f"minigpt train --resume {f['folder']} --trainer.max_steps {2 * f['steps']}",
        "```",
    ]
    for i, text in enumerate(samples, 1):
        lines += ["", f"Sample {i}:", "", "```", text, "```"]
    return "\n".join(lines) + "\n"
