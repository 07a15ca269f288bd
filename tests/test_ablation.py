"""minigpt.inspection.ablation: zeroing a head's output, the windows the loss is measured on, and each head's importance."""

from __future__ import annotations

import copy

import pytest
import torch

from minigpt import evaluate
from minigpt.errors import MiniGPTError
from minigpt.inspection import ablation
from minigpt.model import GPT
from tests.helpers import tiny_config

IDS = [72, 101, 108, 108, 111, 32, 115, 104, 105, 110, 121, 32, 115, 117, 110, 33] * 5  # 80 tokens, block 32


@pytest.fixture
def model() -> GPT:
    """The tiny model with random biases everywhere, so that a zeroed c_proj input still leaves its bias."""
    torch.manual_seed(0)
    gpt = GPT(tiny_config()).eval()
    with torch.no_grad():
        for name, param in gpt.named_parameters():
            if name.endswith("bias"):
                param.normal_(std=0.1)
    return gpt


def with_c_proj_columns_zeroed(model: GPT, heads: list[tuple[int, int]]) -> GPT:
    """A copy of `model` whose attention output projection ignores the given heads' slices of its input."""
    hd = model.config.n_embd // model.config.n_head
    other = copy.deepcopy(model)
    with torch.no_grad():
        for layer, head in heads:
            other.transformer.h[layer].attn.c_proj.weight[:, head * hd : (head + 1) * hd] = 0
    return other


def logits(model: GPT) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([IDS[:32]]))


def test_zeroing_every_head_equals_a_c_proj_that_reads_zeros(model: GPT) -> None:
    config = model.config
    every = [(l, h) for l in range(config.n_layer) for h in range(config.n_head)]
    with ablation.heads_zeroed(model, torch.ones(config.n_layer, config.n_head, dtype=torch.bool)):
        ablated = logits(model)
    torch.testing.assert_close(ablated, logits(with_c_proj_columns_zeroed(model, every)), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ablated, logits(model), atol=1e-3)


def test_each_heads_loss_change_equals_zeroing_its_c_proj_columns(model: GPT) -> None:
    windows = ablation.text_windows(IDS, model.config.block_size)
    importance = ablation.head_importance(model, windows)
    assert importance.base_loss == pytest.approx(ablation.mean_loss(model, windows))
    for layer in range(model.config.n_layer):
        for head in range(model.config.n_head):
            without = ablation.mean_loss(with_c_proj_columns_zeroed(model, [(layer, head)]), windows)
            assert float(importance.loss_change[layer, head]) == pytest.approx(without - importance.base_loss, abs=1e-5)
    assert (importance.loss_change != 0).all()


def test_the_model_is_left_as_it_was(model: GPT) -> None:
    before = logits(model)
    model.train()
    ablation.head_importance(model, ablation.text_windows(IDS, model.config.block_size))
    assert model.training
    assert all(not block.attn.c_proj._forward_pre_hooks for block in model.transformer.h)
    torch.testing.assert_close(logits(model.eval()), before, atol=0, rtol=0)


def test_the_intact_loss_is_the_one_minigpt_eval_measures(model: GPT) -> None:
    ids = torch.tensor(IDS)
    windows = ablation.windows_over(ids, model.config.block_size, "the text")
    assert windows.tokens == len(IDS) - 1
    assert ablation.mean_loss(model, windows) == pytest.approx(evaluate.score(model, ids).loss, rel=1e-6)


def test_a_sample_of_windows_is_spread_over_the_text_and_counts_each_token_once() -> None:
    ids = torch.arange(1000) % 250
    every = ablation.windows_over(ids, 32, "the text")
    sample = ablation.windows_over(ids, 32, "the text", most=5)
    assert sample.rows.shape == (5, 33) and sample.source == "5 windows of the text"
    assert sample.rows[0].tolist() == ids[:33].tolist() and sample.rows[-1].tolist() == ids[-33:].tolist()
    rows = {tuple(row) for row in every.rows.tolist()}
    assert all(tuple(row) in rows for row in sample.rows.tolist())
    assert ablation.windows_over(ids, 32, "the text", most=10_000).tokens == every.tokens == 999


def test_a_text_of_one_token_is_a_user_error() -> None:
    with pytest.raises(MiniGPTError, match="nothing to predict"):
        ablation.text_windows([5], 32)
