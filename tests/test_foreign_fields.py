"""Fields read from files someone else wrote (a Hugging Face folder's config.json and index, a checkpoint's
payload): every bad type or size is one line naming the file and the key, refused before any model is built."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt import checkpoint, tokenizer
from minigpt.errors import MiniGPTError
from minigpt.hf import export as hf_export
from minigpt.hf import pretrained as hf
from minigpt.model import GPT
from tests.helpers import REPO, tiny_config

HUGE = 10**30


@pytest.fixture
def no_model_is_built(monkeypatch) -> None:
    """A refusal must come from the shapes declared and stored, never from building the model they describe."""

    def refuse(self, config):
        raise AssertionError(f"GPT({config}) was built while reading a file that declares it")

    monkeypatch.setattr(GPT, "__init__", refuse)


@pytest.fixture
def hf_folder(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = GPT(tiny_config(activation="gelu_tanh")).eval()
    hf_export.export(checkpoint.Loaded(model, tokenizer.byte_tokenizer()), tmp_path / "gpt2")
    return tmp_path / "gpt2"


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def one_line(err: pytest.ExceptionInfo, *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message and all(word in message for word in words), message


@pytest.mark.parametrize(
    "key, value",
    [
        ("activation_function", ["gelu"]), ("activation_function", None), ("n_embd", None), ("n_embd", {}),
        ("n_embd", "32"), ("n_embd", True), ("n_embd", 32.0), ("n_embd", HUGE), ("n_embd", -32), ("n_layer", 100_000),
        ("n_layer", 10**6), ("n_layer", 0), ("n_head", [2]), ("n_positions", HUGE), ("vocab_size", HUGE),
        ("resid_pdrop", "0.1"), ("resid_pdrop", [0.1]), ("n_inner", {}), ("model_type", ["gpt2"]),
        ("layer_norm_epsilon", "1e-5"),
    ],
)  # fmt: skip
def test_crafted_config_json_values_are_one_line_naming_the_key(hf_folder: Path, no_model_is_built, key, value):
    edit_json(hf_folder / "config.json", **{key: value})
    with pytest.raises(MiniGPTError) as err:
        hf.read_pretrained(str(hf_folder))
    one_line(err, "config.json", key)


def test_a_config_json_nested_past_the_recursion_limit_is_one_line(hf_folder: Path):
    (hf_folder / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(MiniGPTError) as err:
        hf.read_pretrained(str(hf_folder))
    one_line(err, "config.json", "nested too deeply")


def sharded(folder: Path, value) -> Path:
    """`folder` with its weights listed in a model.safetensors.index.json whose every file name is `value`."""
    keys = json.loads((folder / "model.safetensors").read_bytes()[8:].split(b"}}", 1)[0] + b"}}").keys()
    weight_map = {key: value for key in keys if key != "__metadata__"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("value", [3, ["model.safetensors"], {"a": 1}, None, "../gpt2/model.safetensors", "/etc/passwd", ""])
def test_crafted_weight_map_values_are_one_line_naming_the_index(hf_folder: Path, no_model_is_built, value):
    with pytest.raises(MiniGPTError) as err:
        hf.read_pretrained(str(sharded(hf_folder, value)))
    one_line(err, "model.safetensors.index.json", "weight_map")


def test_a_weight_map_naming_the_folders_own_file_still_loads(hf_folder: Path):
    assert hf.read_pretrained(str(sharded(hf_folder, "model.safetensors"))).config.n_layer == 2


def rewrite_model_config(path: Path, **changes) -> None:
    """The checkpoint at `path` with its payload's model config changed and its checksum made right again."""
    ckpt = torch.load(path, weights_only=True)
    ckpt[checkpoint.PAYLOAD_KEY]["model_config"].update(changes)
    checkpoint.atomic_save(ckpt, path)


@pytest.mark.parametrize(
    "changes",
    [
        {"n_embd": HUGE}, {"block_size": HUGE}, {"vocab_size": HUGE}, {"n_layer": 100_000}, {"n_layer": 10**9},
        {"n_head": HUGE}, {"n_head": [2]}, {"n_embd": None}, {"dropout": "0.1"}, {"activation": ["gelu"]},
        {"activation": None}, {"bias": "yes"},
    ],
)  # fmt: skip
def test_a_crafted_checkpoints_model_config_is_refused_before_the_model_is_built(tiny_checkpoint, no_model_is_built, changes):
    rewrite_model_config(tiny_checkpoint, **changes)
    with pytest.raises(MiniGPTError) as err:
        checkpoint.load(tiny_checkpoint)
    one_line(err, str(tiny_checkpoint), next(iter(changes)))


@pytest.mark.parametrize("where", ["checkpoint", "hf"])
def test_generate_from_a_folder_declaring_100000_layers_exits_2_in_one_line(tiny_checkpoint, hf_folder, where):
    if where == "hf":
        edit_json(hf_folder / "config.json", n_layer=100_000)
        source = hf_folder
    else:
        rewrite_model_config(tiny_checkpoint, n_layer=100_000)
        source = tiny_checkpoint
    command = [sys.executable, "-m", "minigpt", "generate", "--ckpt", str(source), "--prompt", "hi", "--max-new-tokens", "2"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "n_layer" in done.stderr, done.stderr


@pytest.mark.parametrize("bias", [True, False])
def test_the_state_a_config_expects_is_the_state_of_the_model_it_builds(bias: bool):
    config = tiny_config(n_layer=3, bias=bias)
    with torch.device("meta"):
        built = {name: tuple(tensor.shape) for name, tensor in GPT(config).state_dict().items()}
    assert list(config.state_shapes().items()) == list(built.items())


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.update(hyper_parameters={"model_config": {"n_layer": torch.zeros(3)}}),
        lambda c: c[checkpoint.PAYLOAD_KEY].update(train_config={"model": {"n_embd": torch.zeros(2, 2)}}),
        lambda c: c[checkpoint.PAYLOAD_KEY].update(train_config={"model": {"n_head": [2]}}),
        lambda c: c[checkpoint.PAYLOAD_KEY].update(data=[1, 2]),
        lambda c: c[checkpoint.PAYLOAD_KEY]["model_config"].update({3: 4}),
    ],
    ids=["tensor-in-hyper-parameters", "tensor-in-training-config", "list-in-training-config", "data-a-list", "int-key"],
)
def test_crafted_payload_records_are_one_line_errors_or_ignored(tiny_checkpoint, change):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    change(ckpt)
    checkpoint.atomic_save(ckpt, tiny_checkpoint)
    try:
        checkpoint.load(tiny_checkpoint)
    except MiniGPTError as err:
        assert "\n" not in str(err)
