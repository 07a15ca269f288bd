"""The Hugging Face GPT-2 format, written: a minigpt model as a folder that ``transformers`` loads without custom
code (the mapping is `minigpt.hf.pretrained`'s, run backwards)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import tiktoken
from safetensors.torch import save_file
from torch import Tensor

from minigpt import checkpoint
from minigpt import tokenizer as tok
from minigpt.errors import MiniGPTError
from minigpt.hf import tokenizer as hf_tokenizer
from minigpt.hf.pretrained import CONV1D, LAYER_NORM_EPS
from minigpt.model import GPTConfig


def export(source: checkpoint.Loaded | str | os.PathLike[str], out: Path) -> None:
    """Write a Hugging Face GPT-2 folder (config, safetensors, tokenizer, generation config, model card) for a
    loaded model or a checkpoint file / run folder, that ``transformers.AutoModelForCausalLM`` loads.

    The folder appears complete or not at all; an existing non-empty `out` is refused.
    """
    loaded = source if isinstance(source, checkpoint.Loaded) else checkpoint.load(source)
    config = loaded.model.config
    if not config.bias:
        raise MiniGPTError("GPT-2's format has biases in every Linear and LayerNorm: train with --model.bias true to export")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MiniGPTError(f"{out} already exists and is not an empty folder: pass a new folder to export into")
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        _write_folder(loaded, tmp, out.name)
        os.replace(tmp, out)  # replaces an empty `out` too
    except OSError as err:  # a parent that is a file, no permission, a full disk: nothing is left behind
        raise MiniGPTError(f"cannot export to {out}: {err.strerror or err}; pass a folder you can write") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_folder(loaded: checkpoint.Loaded, folder: Path, name: str) -> None:
    config, enc = loaded.model.config, loaded.tokenizer
    eot = tok.eot_id(enc)
    state = state_to_hf(loaded.model.state_dict())
    dtype = str(next(iter(state.values())).dtype).removeprefix("torch.")
    _write_json(folder / "config.json", config_to_hf(config, eot, dtype))
    _write_json(folder / "generation_config.json", {"bos_token_id": eot, "eos_token_id": eot})
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})  # transformers needs the format
    hf_tokenizer.save(enc, folder)
    (folder / "README.md").write_text(model_card(config, enc, name), encoding="utf-8")


def state_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """GPT2LMHeadModel's safetensors keys for a minigpt state dict: Conv1D weights transposed back, the tied
    head left out (transformers ties it to ``wte`` on load; safetensors refuses shared tensors anyway)."""
    hf = {}
    for key, value in state.items():
        if key == "lm_head.weight":
            continue
        value = value.detach().cpu()
        if key.endswith(CONV1D) and key.startswith("transformer.h."):
            value = value.t()
        hf[key] = value.contiguous()
    return hf


def config_to_hf(config: GPTConfig, eot: int, dtype: str = "float32") -> dict[str, Any]:
    """A GPT2Config dict for `config`; `eot` (``<|endoftext|>``) is GPT-2's bos and eos."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,  # read by older transformers
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new" if config.activation == "gelu_tanh" else "gelu",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "use_cache": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "tie_word_embeddings": True,
        "dtype": dtype,
    }


EXAMPLE_PROMPT = "Once upon a time"
EXAMPLE_NEW_TOKENS = 50


def model_card(config: GPTConfig, enc: tiktoken.Encoding, name: str) -> str:
    """A short README.md for the exported folder: what the model is and how to load it, with an example that
    runs as written: prompt and new tokens together fit in the model's context."""
    params = config.num_parameters()
    prompt, new_tokens = example_prompt(config.block_size, enc)
    return f"""---
library_name: transformers
tags: [gpt2, minigpt]
---

# {name}

A GPT-2-shaped language model trained with minigpt: {config.n_layer} layers,
{config.n_head} heads, width {config.n_embd}, a context of {config.block_size} tokens, {params:,} parameters,
and the `{enc.name}` tokenizer ({enc.n_vocab} tokens; `<|endoftext|>` separates documents).

```python
from transformers import pipeline
generate = pipeline("text-generation", model="{name}")
print(generate({prompt!r}, max_new_tokens={new_tokens})[0]["generated_text"])
```

The prompt and the tokens generated after it must fit in the context, {config.block_size} tokens in all: the
model has no position beyond it, and transformers stops with an `IndexError` there. Keep
`max_new_tokens` at most {config.block_size} minus the prompt's length in tokens.

`AutoModelForCausalLM.from_pretrained("{name}")` and `AutoTokenizer.from_pretrained("{name}")` load it too.
"""


def example_prompt(block_size: int, enc: tiktoken.Encoding) -> tuple[str, int]:
    """The card's example prompt (its first words, as many as fit in half the context) and how many new tokens
    fit after it."""
    words = EXAMPLE_PROMPT.split(" ")
    prompt = words[0]
    for n in range(len(words), 0, -1):
        if len(enc.encode_ordinary(" ".join(words[:n]))) <= block_size // 2:
            prompt = " ".join(words[:n])
            break
    ids = enc.encode_ordinary(prompt)[: max(1, block_size // 2)]  # a context too short for a word: its first tokens
    return enc.decode(ids), min(EXAMPLE_NEW_TOKENS, block_size - len(ids))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
