"""What a finished run leaves for people: completions printed from its best checkpoint, and the run folder's
README.md model card (`model_card`) with this run's facts and its best validation."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from minigpt import checkpoint
from minigpt.model import GPTConfig
from minigpt.sample import SamplingSettings, generate
from minigpt.training.callbacks.checkpoints import BestCheckpoint
from minigpt.training.callbacks.progress import duration
from minigpt.training.config import TrainConfig

if TYPE_CHECKING:
    import lightning as L

    from minigpt.data.prepare import Prepared


def print_samples(run_dir: Path, count: int, tokens: int, seed: int) -> list[str]:
    """Print `count` completions from the run's best checkpoint, the way `minigpt generate` would; return them."""
    if count < 1:
        return []
    path = checkpoint.file_to_use(run_dir)
    loaded = checkpoint.load(path)
    texts = generate(loaded.model, loaded.tokenizer, "", SamplingSettings(max_new_tokens=tokens, num_samples=count, seed=seed))
    for i, text in enumerate(texts):
        print(f"--- sample {i + 1} ---\n{text}")
    print(f"--- sample more with: minigpt generate --ckpt {path} --prompt '...'")
    return list(texts)


@dataclass(frozen=True)
class RunCard:
    """What the model card (`model_card`) says of a finished run."""

    folder: Path
    """The run folder; its name is the card's title."""
    data: str
    tokenizer: str
    model: GPTConfig
    train_tokens: int
    val_tokens: int
    steps: int
    """Optimizer steps taken."""
    batch_size: int
    """Windows per batch, per process."""
    devices: int
    """Processes that trained."""
    val_loss: float
    """Nats/token at the best checkpoint (nan: the run never validated)."""
    val_bpb: float
    """The same in bits per byte of text."""
    seconds: float
    """Wall time of the whole run."""

    @classmethod
    def of(cls, run_dir: Path, config: TrainConfig, prepared: Prepared, trainer: L.Trainer, seconds: float) -> RunCard:
        """The card of the run that `trainer` has just trained in `run_dir` as `config` says, on `prepared`."""
        score = next(c for c in trainer.callbacks if isinstance(c, BestCheckpoint)).best_model_score
        val_loss = float(score) if score is not None else float("nan")
        meta = prepared.meta
        return cls(
            folder=run_dir, data=config.data, tokenizer=config.tokenizer,
            model=config.model_config(prepared.tokenizer.n_vocab), train_tokens=meta.train.tokens,
            val_tokens=meta.val.tokens, steps=trainer.global_step, batch_size=config.batch_size,
            devices=trainer.world_size, val_loss=val_loss, val_bpb=val_loss / meta.val.bytes_per_token / math.log(2),
            seconds=seconds,
        )  # fmt: skip


def _validation(card: RunCard) -> str:
    if math.isnan(card.val_loss):
        return "not measured: this run did not validate"
    return f"{card.val_loss:.4f} nats/token, {card.val_bpb:.4f} bits/byte (best checkpoint)"


def model_card(card: RunCard, samples: list[str]) -> str:
    """The README.md of a run folder: what was trained on what, how well, and how to use it."""
    c, m = card, card.model
    folder = shlex.quote(str(c.folder))  # commands a reader pastes into a shell: "it's a run" must stay one path
    lines = [
        f"# {c.folder.name}",
        "",
        f"A {m.num_parameters() / 1e6:.2f}M-parameter GPT ({m.n_layer} layers, {m.n_head} heads, {m.n_embd} wide, "
        f"context {m.block_size}) trained with minigpt.",
        "",
        "| | |",
        "| --- | --- |",
        f"| data | `{c.data}` ({c.train_tokens:,} training / {c.val_tokens:,} validation tokens) |",
        f"| tokenizer | `{c.tokenizer}` ({m.vocab_size:,} tokens) |",
        f"| steps | {c.steps:,} ({c.batch_size} windows per batch × {c.devices} process{'es' if c.devices > 1 else ''}) |",
        f"| validation loss | {_validation(c)} |",
        f"| wall time | {duration(c.seconds)} |",
        "",
        "Training and validation loss: `loss.png` (numbers in `metrics.csv`, everything in `tensorboard --logdir tb`)."
        if (c.folder / "loss.png").exists()  # a run too short to log a loss and not validated has none
        else "Everything logged is in `tensorboard --logdir tb`.",
        "",
        "```",
        f"minigpt generate --ckpt {folder} --prompt '...'",
        f"minigpt attention --ckpt {folder} --prompt '...' --out attention/",
        f"minigpt eval --ckpt {folder} --data {shlex.quote(c.data)} --split val",
        f"minigpt train --resume {folder} --trainer.max_steps {2 * c.steps}",
        "```",
    ]
    for i, text in enumerate(samples, 1):
        lines += ["", f"Sample {i}:", "", "```", text, "```"]
    return "\n".join(lines) + "\n"
