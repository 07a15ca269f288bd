"""The Hugging Face GPT-2 format, read: pretrained GPT-2 weights into minigpt (`minigpt.hf.export` writes it).

A GPT-2 folder holds ``config.json`` (model_type gpt2), ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``) and tokenizer files. Sources are a local folder or ``hf:REPO_ID[@REVISION]``,
fetched once into huggingface_hub's own cache (``HF_HOME`` / ``HF_HUB_CACHE``). Only safetensors is read: a
pickled ``pytorch_model.bin`` can run code when loaded.

Mapping, by name: HF keys are minigpt's keys with or without the ``transformer.`` prefix. HF stores the four
Conv1D weights (``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``) transposed relative to
``nn.Linear``; all four are transposed, including the square ``attn.c_proj``, whose shape cannot tell. The
output head is tied to ``wte`` on both sides. Config flags that minigpt cannot reproduce exactly are refused.

Runtime code needs only torch, safetensors, huggingface_hub and json; transformers is used by the tests only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from minigpt import checkpoint
from minigpt.errors import MiniGPTError
from minigpt.hf import tokenizer as hf_tokenizer
from minigpt.jsonfile import field, read_object, show, size_field
from minigpt.model import GPT, MAX_SIZE, GPTConfig

HUB_PREFIX = "hf:"
HUB_FILES = [
    "config.json",
    "model.safetensors",
    "model-*.safetensors",  # shards
    "model.safetensors.index.json",
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
]
"""What `read_pretrained` downloads from a Hub repo: never pickles, ONNX, TF or Flax weights."""

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
"""Weights of a block that HF stores transposed (its Conv1D); the square attn.c_proj too."""

_MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # older files save the causal mask buffers
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
_SIZES = {"vocab_size": 50257, "n_positions": 1024, "n_layer": 12, "n_head": 12, "n_embd": 768}  # GPT2Config's defaults
_SHARD = re.compile(r"[\w.-]+\.safetensors")  # a file in the folder itself: no path separators
CONFIG_BYTES = 1 << 20  # real config.json files are about a kilobyte
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which minigpt's LayerNorms use


@dataclass
class Pretrained:
    """GPT-2 weights in minigpt's terms: what training starts from (`load_pretrained` makes a `Loaded`)."""

    config: GPTConfig
    """Shape from config.json; `dropout` is its resid_pdrop (0.1 in GPT-2: what it trained with), which training may override."""
    state_dict: dict[str, Tensor]
    """Keys of `minigpt.model.GPT` (no ``model.`` prefix), ``lm_head.weight`` the same tensor as ``wte``."""
    tokenizer: tiktoken.Encoding


def is_pretrained_source(source: str) -> bool:
    """True for ``hf:REPO_ID[@REVISION]`` and for a local folder holding ``config.json``."""
    return source.startswith(HUB_PREFIX) or (Path(source) / "config.json").is_file()


def read_pretrained(source: str, cache_dir: Path | None = None) -> Pretrained:
    """The config, minigpt state dict and tokenizer of a GPT-2 model in the Hugging Face format.

    `cache_dir` overrides huggingface_hub's cache for ``hf:`` sources. Every problem is a `MiniGPTError`.
    """
    folder = _resolve(source, cache_dir)
    config = config_from_hf(read_object(folder / "config.json", source, CONFIG_BYTES), source)
    enc = hf_tokenizer.load(folder)
    if enc.n_vocab != config.vocab_size:
        raise MiniGPTError(
            f"{source}: config.json has vocab_size {config.vocab_size} but its tokenizer has {enc.n_vocab} tokens; "
            "minigpt needs them equal"
        )
    return Pretrained(config, state_from_hf(read_weights(folder, source), config, source), enc)


def load_pretrained(source: str, device: str | torch.device = "cpu", cache_dir: Path | None = None) -> checkpoint.Loaded:
    """A GPT-2 model (in eval mode, on `device`) and its tokenizer, ready for generation or attention maps."""
    pretrained = read_pretrained(source, cache_dir)
    checkpoint.check_finite(pretrained.state_dict, f"{source} has NaN or infinite weights: use another copy of the model")
    model = GPT(pretrained.config)
    model.load_state_dict(pretrained.state_dict)
    return checkpoint.Loaded(model.to(device).eval(), pretrained.tokenizer)


def _resolve(source: str, cache_dir: Path | None) -> Path:
    if source.startswith(HUB_PREFIX):
        return _download(source, cache_dir)
    folder = Path(source)
    if not (folder / "config.json").is_file():
        raise MiniGPTError(
            f"{source} is not a Hugging Face model: pass a folder holding config.json and model.safetensors, "
            "or hf:REPO_ID[@REVISION]"
        )
    return folder


def _download(source: str, cache_dir: Path | None) -> Path:
    """The snapshot folder of an ``hf:`` source, downloaded on first use, afterwards read from the cache."""
    import huggingface_hub  # here, not at the top: only hf: sources need it, and it slows every command's start
    from huggingface_hub import errors as hub_errors

    repo_id, _, revision = source.removeprefix(HUB_PREFIX).partition("@")
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision or None, cache_dir=cache_dir, allow_patterns=HUB_FILES
        )
    except hub_errors.LocalEntryNotFoundError:  # also IncompleteSnapshotError
        raise MiniGPTError(
            f"{source} is not in the Hugging Face cache and the Hub cannot be reached (offline, or HF_HUB_OFFLINE=1): "
            f"download the model folder on a machine with network (hf download {repo_id} --local-dir DIR) and pass "
            "its local path DIR"
        ) from None
    except hub_errors.RevisionNotFoundError:
        raise MiniGPTError(f"{source}: the repo {repo_id} has no revision {revision!r}") from None
    except hub_errors.RepositoryNotFoundError:  # also GatedRepoError
        raise MiniGPTError(
            f"{source}: no model repo {repo_id} on the Hugging Face Hub, or it is private or gated "
            "(log in with `hf auth login` if you have access)"
        ) from None
    except hub_errors.HFValidationError:
        raise MiniGPTError(f"bad source '{source}': write hf:ORG/NAME[@REVISION], e.g. hf:openai-community/gpt2") from None
    except hub_errors.HfHubHTTPError as exc:
        raise MiniGPTError(f"could not download {source} from the Hugging Face Hub: {str(exc).splitlines()[0]}") from None
    return Path(folder)


def config_from_hf(raw: dict[str, Any], source: str) -> GPTConfig:
    """minigpt's config for a GPT-2 ``config.json``; refuses, in one line naming the key, any value of the wrong type
    or size and anything minigpt cannot reproduce.

    Missing keys take GPT2Config's defaults, as transformers does.
    """
    where = f"{source}: config.json"
    model_type = field(raw, "model_type", str, where)
    if model_type != "gpt2":
        raise MiniGPTError(f"{where} has model_type {show(model_type)}: minigpt reads only GPT-2 (model_type gpt2)")
    sizes = {key: size_field(raw, key, where, default, MAX_SIZE) for key, default in _SIZES.items()}
    activation = field(raw, "activation_function", str, where) if "activation_function" in raw else "gelu_new"
    dropout = field(raw, "resid_pdrop", (int, float), where) if "resid_pdrop" in raw else 0.1
    if not 0 <= dropout < 1:
        raise MiniGPTError(f"{where}: resid_pdrop must be a number in [0, 1), not {show(dropout)}")
    unsupported = {
        "activation_function": activation not in _ACTIVATIONS,
        "n_inner": raw.get("n_inner") not in (None, 4 * sizes["n_embd"]),
        "layer_norm_epsilon": raw.get("layer_norm_epsilon", LAYER_NORM_EPS) != LAYER_NORM_EPS,
        "scale_attn_weights": raw.get("scale_attn_weights", True) is not True,
        "scale_attn_by_inverse_layer_idx": raw.get("scale_attn_by_inverse_layer_idx", False) is not False,
        "reorder_and_upcast_attn": raw.get("reorder_and_upcast_attn", False) is not False,
        "add_cross_attention": raw.get("add_cross_attention", False) is not False,
    }
    for key, refused in unsupported.items():
        if refused:
            raise MiniGPTError(
                f"{where} sets {key}={show(raw.get(key))}, which minigpt's GPT-2 blocks cannot reproduce "
                "exactly (supported: gelu/gelu_new activations, n_inner 4*n_embd, layer_norm_epsilon 1e-5, scaled "
                "attention without per-layer scaling or upcasting, no cross-attention)"
            )
    try:
        return GPTConfig(
            vocab_size=sizes["vocab_size"],
            block_size=sizes["n_positions"],
            n_layer=sizes["n_layer"],
            n_head=sizes["n_head"],
            n_embd=sizes["n_embd"],
            dropout=dropout,
            bias=True,
            activation=_ACTIVATIONS[activation],
        )
    except ValueError as err:  # n_head does not divide n_embd
        raise MiniGPTError(f"{where}: {err}") from None


def read_weights(folder: Path, source: str) -> dict[str, Tensor]:
    """Every tensor of the folder's safetensors file (or shards), under its stored name; pickles are refused."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        where = f"{source}: {index.name}"
        weight_map = field(read_object(index, source), "weight_map", dict, where)
        for key, name in weight_map.items():
            if not isinstance(name, str) or not _SHARD.fullmatch(name):
                raise MiniGPTError(
                    f"{where}: weight_map puts {show(key)} in {show(name)}, which is not a .safetensors file of the folder"
                )
        files = sorted(set(weight_map.values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise MiniGPTError(
            f"{source} has no model.safetensors: minigpt reads only safetensors weights, since a pickled "
            "pytorch_model.bin can run code when loaded; convert it with transformers' save_pretrained()"
        )
    weights: dict[str, Tensor] = {}
    for name in files:
        try:
            weights.update(load_file(folder / name))
        except (OSError, SafetensorError) as exc:
            raise MiniGPTError(f"{source}: cannot read {name} ({exc}); download it again") from None
    return weights


WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
"""What a GPT-2's weights may be stored as (float64 too: it converts exactly)."""


def state_from_hf(weights: dict[str, Tensor], config: GPTConfig, source: str) -> dict[str, Tensor]:
    """minigpt's state dict from GPT-2 safetensors keys (``transformer.``-prefixed or not), checked against
    `config` before anything is converted or built: every weight present, no stranger, every shape right, the head
    tied to ``wte``."""
    names = {}  # minigpt's name -> the file's
    for key in weights:
        name = key.removeprefix("transformer.")
        if name != "lm_head.weight" and not _MASK_BUFFER.fullmatch(name):
            names["transformer." + name] = key
    shapes = {name: _as_linear(name, tuple(weights[key].shape)) for name, key in names.items()}
    if "transformer.wte.weight" in shapes:  # tied: the head is the embedding
        shapes["lm_head.weight"] = shapes["transformer.wte.weight"]
    try:
        checkpoint.check_shapes(config, shapes, described_by="config.json")
    except ValueError as err:
        raise MiniGPTError(f"{source}: {err}") from None
    for name, key in names.items():
        if weights[key].dtype not in WEIGHT_DTYPES:  # float8 or ints: no GPT-2 is stored so, and torch cannot check them
            raise MiniGPTError(
                f"{source}: {key} is stored as {str(weights[key].dtype).removeprefix('torch.')}; GPT-2's weights are "
                "float32, float16 or bfloat16"
            )
    state = {name: _as_linear(name, weights[key]).contiguous() for name, key in names.items()}
    wte = state["transformer.wte.weight"]
    head = weights.get("lm_head.weight")
    if head is not None and not torch.equal(head, wte):
        raise MiniGPTError(
            f"{source}: its lm_head.weight differs from wte.weight; minigpt ties the output head to the token "
            "embedding, so it cannot hold this model"
        )
    state["lm_head.weight"] = wte
    return state


def _as_linear(name: str, value: Any) -> Any:
    """A stored weight (a tensor or its shape) as minigpt's nn.Linear holds it: HF's Conv1D ones are (in, out)."""
    if name.startswith("transformer.h.") and name.endswith(CONV1D):
        return value.t() if isinstance(value, Tensor) else value[::-1]
    return value
