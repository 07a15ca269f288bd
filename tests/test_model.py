import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from minigpt.model import GPT, GPTConfig
from tests.helpers import tiny_config


def test_forward_returns_logits_for_every_position(tiny_model):
    idx = torch.randint(0, 257, (3, 20))
    assert tiny_model(idx).shape == (3, 20, 257)


def test_future_tokens_do_not_change_past_logits(tiny_model):
    idx = torch.randint(0, 257, (1, 24))
    changed = idx.clone()
    j = 13
    changed[0, j] = (idx[0, j] + 1) % 257
    before, after = tiny_model(idx), tiny_model(changed)
    assert torch.equal(before[:, :j], after[:, :j])
    assert not torch.allclose(before[:, j], after[:, j])


def test_sdpa_path_equals_explicit_weights_path(tiny_model):
    idx = torch.randint(0, 257, (2, 32))
    logits_explicit, _ = tiny_model.forward_with_attention(idx)
    torch.testing.assert_close(tiny_model(idx), logits_explicit, atol=1e-5, rtol=1e-5)


def test_attention_block_outputs_match_between_paths(tiny_model):
    x = torch.randn(2, 16, tiny_model.config.n_embd)
    attn = tiny_model.transformer.h[0].attn
    y_explicit, weights = attn.forward_with_weights(x)
    torch.testing.assert_close(attn(x), y_explicit, atol=1e-6, rtol=1e-5)
    assert weights.shape == (2, tiny_model.config.n_head, 16, 16)


def test_initial_loss_is_close_to_uniform(tiny_model):
    batch = torch.randint(0, 257, (8, 33))
    loss = F.cross_entropy(tiny_model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
    assert abs(loss.item() - math.log(257)) < 0.1


def test_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    batch = torch.randint(0, 257, (4, 33))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_kv_cache_matches_full_forward_for_prefill_and_single_steps(tiny_model):
    idx = torch.randint(0, 257, (2, 32))
    cache = tiny_model.new_cache()
    pieces = [tiny_model(idx[:, :7], cache)]
    pieces += [tiny_model(idx[:, t : t + 1], cache) for t in range(7, 20)]
    pieces.append(tiny_model(idx[:, 20:], cache))
    torch.testing.assert_close(torch.cat(pieces, dim=1), tiny_model(idx), atol=1e-5, rtol=1e-5)
    assert cache.length == 32


def test_sequence_longer_than_block_size_is_refused(tiny_model):
    with pytest.raises(ValueError, match="block_size"):
        tiny_model(torch.zeros(1, 33, dtype=torch.long))


def test_parameter_names_follow_gpt2():
    names = set(GPT(tiny_config(n_layer=1)).state_dict())
    for name in ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
                 "transformer.h.0.attn.c_proj.weight", "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.ln_1.weight",
                 "transformer.h.0.ln_2.bias", "transformer.ln_f.weight", "lm_head.weight"]:  # fmt: skip
        assert name in names


def test_lm_head_is_tied_to_token_embedding(tiny_model):
    assert tiny_model.lm_head.weight.data_ptr() == tiny_model.transformer.wte.weight.data_ptr()


def test_residual_projections_use_scaled_init():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=100, block_size=16, n_layer=8, n_head=4, n_embd=256)
    model = GPT(config)
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    model = GPT(tiny_config(dropout=0.5))
    idx = torch.randint(0, 257, (1, 16))
    model.train()
    assert not torch.equal(model(idx), model(idx))
    model.eval()
    assert torch.equal(model(idx), model(idx))


def test_n_embd_must_divide_by_n_head():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)


@pytest.mark.parametrize("bias", [True, False])
def test_config_counts_the_parameters_of_the_model_it_builds(bias):
    config = tiny_config(n_layer=3, n_embd=48, n_head=4, bias=bias, vocab_size=300)
    assert config.num_parameters() == GPT(config).num_parameters()


def test_gelu_tanh_is_gpt2s_activation_and_old_configs_keep_exact_gelu():
    x = torch.linspace(-4, 4, 101)
    gpt2_gelu_new = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    tanh_mlp = GPT(tiny_config(activation="gelu_tanh")).transformer.h[0].mlp
    torch.testing.assert_close(tanh_mlp.gelu(x), gpt2_gelu_new)
    assert GPTConfig(**{k: v for k, v in asdict(tiny_config()).items() if k != "activation"}).activation == "gelu"
    assert not torch.allclose(GPT(tiny_config()).transformer.h[0].mlp.gelu(x), gpt2_gelu_new)
    with pytest.raises(ValueError, match="activation must be one of gelu, gelu_tanh"):
        tiny_config(activation="relu")
