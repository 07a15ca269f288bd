"""minigpt.inspection.maps: extraction from the model's explicit attention path, aggregates and head statistics."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from minigpt.inspection import maps as attention
from minigpt.model import GPT, CausalSelfAttention, GPTConfig
from tests.helpers import tiny_config

IDS = [72, 101, 108, 108, 111, 32, 115, 104, 105, 110, 121, 32, 115, 117, 110, 33]


def test_every_row_sums_to_one(tiny_model: GPT) -> None:
    weights = attention.extract(tiny_model, IDS).weights
    assert weights.shape == (2, 2, len(IDS), len(IDS))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, len(IDS)), atol=1e-5, rtol=0)


def test_weights_above_the_diagonal_are_exactly_zero(tiny_model: GPT) -> None:
    weights = attention.extract(tiny_model, IDS).weights
    future = torch.ones(len(IDS), len(IDS), dtype=torch.bool).triu(1)
    assert (weights[..., future] == 0).all()


def test_weights_times_values_reproduce_the_sdpa_heads(tiny_model: GPT) -> None:
    """weights @ V, heads concatenated, equals what the fused SDPA path feeds into c_proj, in every layer."""
    inputs, merged = {}, {}
    hooks = []
    for layer, block in enumerate(tiny_model.transformer.h):
        attn = block.attn
        hooks.append(attn.register_forward_pre_hook(lambda m, a, layer=layer: inputs.__setitem__(layer, a[0])))
        hooks.append(attn.c_proj.register_forward_pre_hook(lambda m, a, layer=layer: merged.__setitem__(layer, a[0])))
    with torch.no_grad():
        tiny_model(torch.tensor([IDS]))
    for hook in hooks:
        hook.remove()

    weights = attention.extract(tiny_model, IDS).weights  # (L, H, T, T)
    config = tiny_model.config
    T, hd = len(IDS), config.n_embd // config.n_head
    for layer, block in enumerate(tiny_model.transformer.h):
        with torch.no_grad():
            v = block.attn.c_attn(inputs[layer])[0, :, 2 * config.n_embd :]  # (T, C)
        v = v.view(T, config.n_head, hd).transpose(0, 1)  # (H, T, hd)
        heads = weights[layer] @ v  # (H, T, hd)
        torch.testing.assert_close(heads.transpose(0, 1).reshape(T, -1), merged[layer][0], atol=1e-5, rtol=1e-4)


def test_extraction_returns_the_models_own_logits_and_restores_training_mode() -> None:
    torch.manual_seed(0)
    model = GPT(tiny_config(dropout=0.2)).train()
    before = model.eval()(torch.tensor([IDS]))[0].detach()
    model.train()
    maps = attention.extract(model, IDS)
    assert model.training
    torch.testing.assert_close(maps.logits, before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.eval()(torch.tensor([IDS]))[0].detach(), before, atol=0, rtol=0)


def test_sequences_longer_than_block_size_keep_the_last_tokens(tiny_model: GPT, caplog) -> None:
    ids = list(range(40))
    with caplog.at_level(logging.WARNING, logger="minigpt.inspection.maps"):
        maps = attention.extract(tiny_model, ids)
    assert maps.ids == ids[-32:]
    assert maps.weights.shape[-1] == 32
    assert "block_size" in caplog.text


def test_worked_example_hello_shiny_sun_through_the_models_attention() -> None:
    """DESIGN.md's example: one head, identity projections, unscaled scores, query "shiny".

    "shiny" is put last so that, under the causal mask, it sees all three words.
    """
    attn = CausalSelfAttention(GPTConfig(n_embd=3, n_head=1, bias=False)).eval()
    eye = torch.eye(3)
    with torch.no_grad():
        # Q scaled by √d_k cancels the module's 1/√d_k: the scores are the plain dot products.
        attn.c_attn.weight.copy_(torch.cat([math.sqrt(3) * eye, eye, eye]))
        attn.c_proj.weight.copy_(eye)
        hello, sun, shiny = [0.34, 0.22, 0.54], [0.29, 0.54, 0.93], [0.53, 0.34, 0.98]
        context, weights = attn.forward_with_weights(torch.tensor([[hello, sun, shiny]]))
    torch.testing.assert_close(weights[0, 0, 2], torch.tensor([0.229, 0.365, 0.406]), atol=1e-3, rtol=0)
    torch.testing.assert_close(context[0, 2], torch.tensor([0.399, 0.385, 0.861]), atol=1e-3, rtol=0)
    assert weights[0, 0, 0].tolist() == [1.0, 0.0, 0.0]


def _hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.size(0) < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h


def positional_head_model(shift: int, block_size: int = 8) -> GPT:
    """One layer, one head whose query at position i matches only the key at position i − `shift`.

    Positions are embedded as orthogonal ±1 rows of a Hadamard matrix (mean 0, variance 1, so ln_1 leaves
    them unchanged) and tokens not at all; W_q maps position p's vector onto that of p − shift.
    """
    n_embd = max(16, 2 * block_size)  # a power of two above block_size, for the Hadamard rows
    model = GPT(GPTConfig(vocab_size=257, block_size=block_size, n_layer=1, n_head=1, n_embd=n_embd)).eval()
    positions = _hadamard(n_embd)[1 : block_size + 1]  # (block_size, C), row 0 (all ones) left out
    w_q = torch.zeros(n_embd, n_embd)
    for p in range(shift, block_size):
        w_q += 10.0 * torch.outer(positions[p - shift], positions[p]) / n_embd
    with torch.no_grad():
        model.transformer.wte.weight.zero_()
        model.transformer.wpe.weight.copy_(positions)
        model.transformer.h[0].attn.c_attn.weight.copy_(torch.cat([w_q, torch.eye(n_embd), torch.eye(n_embd)]))
        model.transformer.h[0].attn.c_attn.bias.zero_()
    return model


def test_previous_token_score_is_one_for_a_head_built_to_look_back_one_token() -> None:
    weights = attention.extract(positional_head_model(shift=1), [5, 9, 5, 7, 1, 2, 3, 4]).weights
    assert attention.previous_token_score(weights)[0, 0] > 0.999
    assert attention.first_token_score(weights)[0, 0] == pytest.approx(1 / 7, abs=1e-3)


def test_induction_score_reads_the_token_after_the_previous_occurrence_at_every_distance() -> None:
    """Row b repeats with period d_b, so its induction target for query i is i − d_b + 1. A head that always
    looks d − 1 back hits it in the one row of period d: a quarter of the score a real induction head gets
    (tests/test_induction.py trains one). Fixed-distance heads once scored as induction heads."""
    n = 8
    distances = attention.induction_distances(n)
    assert len(set(distances)) == len(distances) == attention.INDUCTION_BATCH
    for d in distances:
        score = attention.induction_score(positional_head_model(shift=d - 1, block_size=2 * n), length=n)[0, 0]
        assert score == pytest.approx(1 / len(distances), abs=0.03), d  # early queries spread a little
    assert attention.induction_score(positional_head_model(shift=1, block_size=2 * n), length=n)[0, 0] < 0.01


def test_entropy_of_uniform_causal_rows_is_the_mean_log_of_the_row_length() -> None:
    T = 5
    weights = torch.ones(T, T).tril()
    weights = weights / weights.sum(-1, keepdim=True)
    expected = sum(math.log(i + 1) for i in range(T)) / T
    assert float(attention.entropy(weights)) == pytest.approx(expected)


def test_rollout_rows_sum_to_one_and_stay_causal(tiny_model: GPT) -> None:
    flows = attention.rollout(attention.extract(tiny_model, IDS).weights)
    assert flows.shape == (2, len(IDS), len(IDS))
    torch.testing.assert_close(flows.sum(-1), torch.ones(2, len(IDS)), atol=1e-5, rtol=0)
    assert (flows.triu(1) == 0).all()


def test_rollout_multiplies_residual_averaged_layers() -> None:
    weights = torch.rand(2, 3, 4, 4).tril()
    weights = weights / weights.sum(-1, keepdim=True)
    eye = torch.eye(4)
    first, second = [(w.mean(0) + eye) / 2 for w in weights]
    flows = attention.rollout(weights)
    torch.testing.assert_close(flows[0], first)
    torch.testing.assert_close(flows[1], second @ first)


def test_mean_aggregate_averages_the_heads() -> None:
    weights = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(attention.aggregate(weights, "mean")[1], weights[1].mean(0))


def test_top_heads_ranks_scores_and_skips_nan() -> None:
    scores = torch.tensor([[0.1, float("nan")], [0.9, 0.5]])
    assert attention.top_heads(scores, 2) == [(1, 0, pytest.approx(0.9)), (1, 1, pytest.approx(0.5))]
    assert attention.top_heads(scores, 1, largest=False) == [(0, 0, pytest.approx(0.1))]


def test_a_context_too_short_to_repeat_a_token_has_no_induction_score() -> None:
    """block_size 3 cannot hold two copies of even two tokens: NaN (shown as n/a), not an error mid-training."""
    scores = attention.induction_score(GPT(GPTConfig(vocab_size=257, block_size=3, n_layer=2, n_head=1, n_embd=8)))
    assert scores.shape == (2, 1) and scores.isnan().all()
