"""The Hugging Face GPT-2 format: transformers' own models against minigpt's, both ways, offline.

transformers is used here only, as the reference that the mapping must match numerically.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch

from minigpt import checkpoint, tokenizer
from minigpt.errors import MiniGPTError
from minigpt.hf import export as hf_export
from minigpt.hf import pretrained as hf
from minigpt.hf import tokenizer as hf_tokenizer
from minigpt.model import GPT
from tests.helpers import tiny_config

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4
ENC = tokenizer.byte_tokenizer()
EOT = tokenizer.eot_id(ENC)
TEXT = "Hello, wörld! It's 2024 — naïve café  \n\tdone."


def hf_gpt2(activation: str = "gelu_new", vocab_size: int = 257, **overrides) -> transformers.GPT2LMHeadModel:
    """A tiny random transformers GPT-2, every weight perturbed so that biases and LayerNorms matter too."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=vocab_size, activation_function=activation,
        bos_token_id=EOT, eos_token_id=EOT, **overrides,
    )  # fmt: skip
    return perturbed(transformers.GPT2LMHeadModel(config).eval())


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def save_hf(model: torch.nn.Module, folder: Path) -> Path:
    """`model` saved as safetensors with the bytes tokenizer beside it."""
    model.save_pretrained(folder, safe_serialization=True)
    hf_tokenizer.save(ENC, folder)
    return folder


def random_ids(n: int = 40, vocab_size: int = 257) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, n), generator=torch.Generator().manual_seed(1))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def minigpt_model(activation: str = "gelu_tanh") -> checkpoint.Loaded:
    torch.manual_seed(0)
    return checkpoint.Loaded(perturbed(GPT(tiny_config(activation=activation))).eval(), ENC)


@pytest.fixture
def hf_folder(tmp_path: Path) -> Path:
    return save_hf(hf_gpt2(), tmp_path / "gpt2")


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# ---- reading -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["gelu_new", "gelu_pytorch_tanh", "gelu"])
def test_pretrained_logits_equal_transformers_logits(tmp_path: Path, activation: str):
    reference = hf_gpt2(activation)
    loaded = hf.load_pretrained(str(save_hf(reference, tmp_path)))
    ids = random_ids()
    with torch.no_grad():
        assert max_diff(loaded.model(ids), reference(ids).logits) <= TOLERANCE


def test_keys_without_the_transformer_prefix_are_read(tmp_path: Path):
    """openai-community/gpt2 stores GPT2Model keys (h.0.attn..., wte.weight) without lm_head."""
    reference = hf_gpt2()
    loaded = hf.load_pretrained(str(save_hf(reference.transformer, tmp_path)))
    ids = random_ids()
    with torch.no_grad():
        assert max_diff(loaded.model(ids), reference(ids).logits) <= TOLERANCE


def test_mask_buffers_of_older_files_are_skipped(hf_folder: Path):
    weights = hf.read_weights(hf_folder, "src")
    config = hf.read_pretrained(str(hf_folder)).config
    with_buffers = {**weights, "transformer.h.0.attn.bias": torch.ones(1, 1, 64, 64), "h.1.attn.masked_bias": torch.tensor(-1e4)}
    assert hf.state_from_hf(with_buffers, config, "src").keys() == hf.state_from_hf(weights, config, "src").keys()


def test_pretrained_state_dict_loads_strictly_with_a_tied_head(hf_folder: Path):
    pretrained = hf.read_pretrained(str(hf_folder))
    model = GPT(pretrained.config)
    model.load_state_dict(pretrained.state_dict)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert pretrained.config.activation == "gelu_tanh" and pretrained.config.dropout == 0.1


def test_skipping_the_square_c_proj_transpose_is_caught_by_the_logits(monkeypatch, hf_folder: Path):
    """attn.c_proj is (n_embd, n_embd): a mapping that transposes by shape would load it untransposed."""
    by_shape = tuple(name for name in hf.CONV1D if name != "attn.c_proj.weight")
    monkeypatch.setattr(hf, "CONV1D", by_shape)
    reference = hf.load_pretrained(str(hf_folder))  # built with the wrong mapping
    monkeypatch.undo()
    ids = random_ids()
    with torch.no_grad():
        assert max_diff(reference.model(ids), hf.load_pretrained(str(hf_folder)).model(ids)) > 1e-3


def test_sharded_safetensors_are_read(tmp_path: Path):
    reference = hf_gpt2()
    reference.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="20KB")
    hf_tokenizer.save(ENC, tmp_path)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ids = random_ids()
    with torch.no_grad():
        assert max_diff(hf.load_pretrained(str(tmp_path)).model(ids), reference(ids).logits) <= TOLERANCE


def test_is_pretrained_source(hf_folder: Path, tmp_path: Path, tiny_checkpoint: Path):
    assert hf.is_pretrained_source("hf:openai-community/gpt2")
    assert hf.is_pretrained_source(str(hf_folder))
    assert not hf.is_pretrained_source(str(tiny_checkpoint))
    assert not hf.is_pretrained_source(str(tmp_path / "missing"))


# ---- refusals ------------------------------------------------------------------------------------------


def test_a_folder_with_only_pytorch_model_bin_is_refused(tmp_path: Path):
    folder = save_hf(hf_gpt2(), tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(MiniGPTError, match="only safetensors.*can run code"):
        hf.read_pretrained(str(folder))


@pytest.mark.parametrize(
    "changes",
    [
        {"model_type": "llama"},
        {"activation_function": "relu"},
        {"n_inner": 64},
        {"layer_norm_epsilon": 1e-6},
        {"scale_attn_weights": False},
        {"scale_attn_by_inverse_layer_idx": True},
        {"reorder_and_upcast_attn": True},
        {"add_cross_attention": True},
    ],
)
def test_configs_minigpt_cannot_reproduce_are_refused(hf_folder: Path, changes: dict):
    edit_config(hf_folder, **changes)
    with pytest.raises(MiniGPTError) as err:
        hf.read_pretrained(str(hf_folder))
    assert "\n" not in str(err.value) and next(iter(changes)) in str(err.value)


def test_a_vocab_size_unlike_the_tokenizers_is_refused(tmp_path: Path):
    folder = save_hf(hf_gpt2(vocab_size=300), tmp_path)
    with pytest.raises(MiniGPTError, match="vocab_size 300 but its tokenizer has 257"):
        hf.read_pretrained(str(folder))


def test_an_untied_lm_head_is_refused(hf_folder: Path):
    config = hf.read_pretrained(str(hf_folder)).config
    weights = hf.read_weights(hf_folder, "src")
    weights["lm_head.weight"] = weights["transformer.wte.weight"] + 1
    with pytest.raises(MiniGPTError, match="lm_head.weight differs from wte"):
        hf.state_from_hf(weights, config, "src")


def test_weights_unlike_the_config_are_refused(hf_folder: Path):
    edit_config(hf_folder, n_layer=3)
    with pytest.raises(MiniGPTError, match="config.json declares n_layer=3 but the weights hold 2 layers"):
        hf.read_pretrained(str(hf_folder))


def test_a_folder_without_config_json_is_refused(tmp_path: Path):
    with pytest.raises(MiniGPTError, match="not a Hugging Face model"):
        hf.read_pretrained(str(tmp_path))


# ---- the Hub cache ----------------------------------------------------------------------------------------


@pytest.fixture
def offline_cache(monkeypatch, tmp_path: Path) -> Path:
    """An empty huggingface_hub cache, with the Hub unreachable (HF_HUB_OFFLINE=1)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads both variables once, at import
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_an_uncached_hub_model_offline_is_one_line_saying_what_to_do(offline_cache: Path):
    with pytest.raises(MiniGPTError) as err:
        hf.read_pretrained("hf:some-org/some-model")
    assert "\n" not in str(err.value) and "pass its local path" in str(err.value)


def test_a_hub_model_in_the_cache_is_read_offline(offline_cache: Path, hf_folder: Path):
    """The cache layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/COMMIT/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_cache / "models--some-org--tiny-gpt2"
    shutil.copytree(hf_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    expected = hf.read_pretrained(str(hf_folder)).state_dict
    for source in ("hf:some-org/tiny-gpt2", f"hf:some-org/tiny-gpt2@{commit}"):
        state = hf.read_pretrained(source).state_dict
        assert all(torch.equal(state[k], expected[k]) for k in expected)


# ---- export --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["gelu_tanh", "gelu"])
def test_exported_model_gives_equal_logits_in_transformers(tmp_path: Path, activation: str):
    loaded = minigpt_model(activation)
    hf_export.export(loaded, tmp_path / "out")
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = random_ids(32)
    with torch.no_grad():
        assert max_diff(reference(ids).logits, loaded.model(ids)) <= TOLERANCE
    assert reference.lm_head.weight.data_ptr() == reference.transformer.wte.weight.data_ptr()


def test_exported_tokenizer_gives_minigpts_ids(tmp_path: Path):
    enc = tokenizer.build_tokenizer("bpe:300", [TEXT * 20, "the quick brown fox jumps over the lazy dog " * 20])
    torch.manual_seed(0)
    hf_export.export(checkpoint.Loaded(GPT(tiny_config(vocab_size=enc.n_vocab)).eval(), enc), tmp_path / "out")
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert auto(TEXT)["input_ids"] == tokenizer.encode(enc, TEXT)
    assert auto.decode(tokenizer.encode(enc, TEXT)) == TEXT


def test_exported_folder_runs_in_a_text_generation_pipeline(tmp_path: Path):
    hf_export.export(minigpt_model(), tmp_path / "out")
    generate = transformers.pipeline("text-generation", model=str(tmp_path / "out"))
    result = generate("Hello", max_new_tokens=5, do_sample=False)
    assert result[0]["generated_text"].startswith("Hello")


def test_export_then_read_round_trips(tmp_path: Path, tiny_checkpoint: Path):
    hf_export.export(tiny_checkpoint, tmp_path / "out")
    original = checkpoint.load(tiny_checkpoint)
    pretrained = hf.read_pretrained(str(tmp_path / "out"))
    assert pretrained.config == original.model.config
    assert pretrained.tokenizer.encode_ordinary(TEXT) == ENC.encode_ordinary(TEXT)
    state = original.model.state_dict()
    assert state.keys() == pretrained.state_dict.keys()
    assert all(torch.equal(state[k], pretrained.state_dict[k]) for k in state)
    card = (tmp_path / "out" / "README.md").read_text()
    assert 'pipeline("text-generation", model="out")' in card


@pytest.mark.parametrize("block_size", [64, 8])
def test_the_model_cards_example_runs_as_written_for_a_short_context(monkeypatch, tmp_path: Path, block_size: int):
    torch.manual_seed(0)
    loaded = checkpoint.Loaded(perturbed(GPT(tiny_config(block_size=block_size))).eval(), ENC)
    hf_export.export(loaded, tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1)
    assert f"{block_size} tokens" in card
    monkeypatch.chdir(tmp_path)  # the card names the folder as it was exported: "out"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exec(compile(example, "README.md", "exec"), {})


def test_export_without_biases_is_refused(tmp_path: Path):
    loaded = checkpoint.Loaded(GPT(tiny_config(bias=False)), ENC)
    with pytest.raises(MiniGPTError, match="train with --model.bias true to export"):
        hf_export.export(loaded, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_into_a_non_empty_folder_is_refused(tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(MiniGPTError, match="not an empty folder"):
        hf_export.export(minigpt_model(), tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_a_hugging_face_model_with_nan_weights_is_refused_in_one_line(tmp_path: Path):
    """It loaded, and `export` would have written it again; a minigpt checkpoint with NaN weights was refused."""
    model = hf_gpt2()
    with torch.no_grad():
        model.transformer.h[0].attn.c_attn.weight[0, 0] = float("nan")
    with pytest.raises(MiniGPTError, match="has NaN or infinite weights: use another copy of the model"):
        hf.load_pretrained(str(save_hf(model, tmp_path)))


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.int8])
def test_weights_stored_in_another_number_format_are_refused_in_one_line(tmp_path: Path, dtype):
    """float8 crashed the NaN check with a traceback (torch has no isfinite for it)."""
    from safetensors.torch import load_file, save_file

    folder = save_hf(hf_gpt2(), tmp_path)
    weights = load_file(folder / "model.safetensors")
    weights["transformer.ln_f.weight"] = weights["transformer.ln_f.weight"].to(dtype)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MiniGPTError, match=f"ln_f.weight is stored as {str(dtype).removeprefix('torch.')}; GPT-2's"):
        hf.load_pretrained(str(folder))
