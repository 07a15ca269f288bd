"""Shared fixtures: tiny models and checkpoints built in-process, no network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minigpt import checkpoint, tokenizer
from minigpt.model import GPT, GPTConfig
from minigpt.payload import MODEL_PREFIX, checkpoint_payload

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
RUN_FILES = ["README.md", "best.ckpt", "config.yaml", "last.ckpt", "loss.png", "metrics.csv", "tb"]
"""What a finished run folder holds."""


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models run faster on one thread: OpenMP hand-offs cost more than the work (worse on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides) -> GPTConfig:
    """A model small enough to train for a few steps in a test."""
    fields = dict(vocab_size=257, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    return GPTConfig(**{**fields, **overrides})


@pytest.fixture
def tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(tiny_config()).eval()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, tiny_model: GPT) -> Path:
    """A minimal self-contained checkpoint (random weights, bytes tokenizer) written without Lightning."""
    path = tmp_path / "tiny.ckpt"
    payload = checkpoint_payload(tiny_model.config, tokenizer.byte_tokenizer(), {})
    state = {MODEL_PREFIX + k: v for k, v in tiny_model.state_dict().items()}
    checkpoint.atomic_save({"state_dict": state, checkpoint.PAYLOAD_KEY: payload}, path)
    return path
