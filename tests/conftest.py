"""Shared fixtures: tiny models and checkpoints built in-process, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from minigpt import checkpoint, tokenizer
from minigpt.model import GPT
from minigpt.payload import MODEL_PREFIX, Payload
from tests.helpers import REPO, tiny_config


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models run faster on one thread: OpenMP hand-offs cost more than the work (worse on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(tiny_config()).eval()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, tiny_model: GPT) -> Path:
    """A minimal self-contained checkpoint (random weights, bytes tokenizer) written without Lightning."""
    path = tmp_path / "tiny.ckpt"
    payload = Payload(tiny_model.config, tokenizer.byte_tokenizer()).to_dict()
    state = {MODEL_PREFIX + k: v for k, v in tiny_model.state_dict().items()}
    checkpoint.atomic_save({"state_dict": state, checkpoint.PAYLOAD_KEY: payload}, path)
    return path


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    """tiny-shakespeare, the one text from outside the repo a test may use: $MINIGPT_TEST_SHAKESPEARE, else the
    workspace's ../shared/data copy; a test that needs it is skipped where it is not."""
    path = Path(os.environ.get("MINIGPT_TEST_SHAKESPEARE", REPO.parent / "shared" / "data" / "tinyshakespeare.txt"))
    if not path.is_file():
        pytest.skip(f"needs tinyshakespeare.txt at {path} (set MINIGPT_TEST_SHAKESPEARE)")
    return path
