"""What a finished run leaves for people: completions printed from its best checkpoint, and the run folder's
README.md model card (`minigpt.runcard.model_card`) with this run's facts and its best validation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from minigpt import checkpoint
from minigpt.model import GPTConfig

if TYPE_CHECKING:
    import lightning as L
    from jsonargparse import Namespace

    from minigpt.prepare import Prepared


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
    """The run folder's README.md (see `minigpt.runcard.model_card`): this run's facts and its best validation."""
    from minigpt.checkpointing import BestCheckpoint
    from minigpt.progress import duration
    from minigpt.runcard import model_card

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
