"""The Hugging Face GPT-2 format, written: a minigpt model as a folder that ``transformers`` loads without custom
code (the mapping is `minigpt.hf.pretrained`'s, run backwards)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import tiktoken
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import Tensor

from minigpt import checkpoint, staging
from minigpt import tokenizer as tok
from minigpt.errors import DISK_FULL, MiniGPTError
from minigpt.folders import first_missing, refuse_dangling_link, remove_made
from minigpt.hf import tokenizer as hf_tokenizer
from minigpt.hf.pretrained import CONV1D, LAYER_NORM_EPS
from minigpt.model import GPTConfig


def export(source: checkpoint.Loaded | str | os.PathLike[str], out: Path) -> None:
    """Write a Hugging Face GPT-2 folder (config, safetensors, tokenizer, generation config, model card) for a
    loaded model or a checkpoint file / run folder, that ``transformers.AutoModelForCausalLM`` loads.

    The folder appears complete or not at all. A new folder is written under a temporary sibling, locked while
    this process runs, and renamed into place. An existing empty folder stays the one you made (its mode, owner
    and mount): the files are written under a temporary folder inside it and moved in, config.json (what a loader
    opens first) last. A non-empty `out` is refused and a link to a folder is followed. Temporary folders that
    killed exports left are removed first; folders made for `out` are removed again if the export fails.
    """
    loaded = source if isinstance(source, checkpoint.Loaded) else checkpoint.load(source)
    config = loaded.model.config
    if not config.bias:
        raise MiniGPTError("GPT-2's format has biases in every Linear and LayerNorm: train with --model.bias true to export")
    shown, made = Path(out), None
    try:
        out = destination(shown)
        made = first_missing(out.parent)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.sweep(out.parent, "export")
        existing = out.is_dir()
        with staging.staging_folder(out if existing else out.parent, out.name, "export") as staged:
            _write_folder(loaded, staged, shown.name or out.name)
            if existing:
                _fill(staged, out)
            else:
                os.replace(staged, out)
    except BaseException as err:  # a full disk, Ctrl-C, or another export that published `out` meanwhile
        if made is not None:
            remove_made(out.parent, made)
        if isinstance(err, OSError):
            raise _write_error(shown, err) from None
        raise


def _fill(staged: Path, out: Path) -> None:
    """Move the files in `staged` into the empty folder `out`, config.json last, holding `out`'s lock: two exports
    into one folder cannot mix their files, and the second finds the first's there. If the move stops (an error,
    a signal), the files moved are taken out again, and the next export into `out` takes out those of an export
    killed halfway (`_recover`)."""
    try:
        with staging.locked(out, wait=False):
            if _holds_anything(out):  # another export filled it meanwhile
                raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), str(out))
            staging.move_in(staged, out, sorted(os.listdir(staged), key=lambda name: name == "config.json"))
    except BlockingIOError:
        raise OSError(errno.ENOTEMPTY, "another export is writing it", str(out)) from None


def _recover(out: Path) -> None:
    """Empty `out` again of what exports killed while filling it left: their temporary folders, and the files
    they had moved in, unless config.json (moved last) was in too, which makes the export whole."""
    with contextlib.suppress(OSError):  # BlockingIOError: a live export is filling it
        with staging.locked(out, wait=False):
            staging.sweep(out, "export", out.name, lambda dead: staging.undo_unfinished(dead, out))


def destination(out: Path) -> Path:
    """The folder that exporting to `out` replaces, checked before anything is written: links followed to the
    folder they name, and a `MiniGPTError` for what cannot be exported into (the current folder, a file, a
    non-empty folder, a path under a file)."""
    try:
        resolved = out.resolve()
    except RuntimeError:  # a loop of links (an OSError from Python 3.13)
        raise MiniGPTError(f"cannot export to {out}: its links form a loop; pass another folder") from None
    if out.is_symlink() and not resolved.is_dir():
        what = "is not a folder" if os.path.exists(out) else "does not exist"
        raise MiniGPTError(f"cannot export to {out}: it is a link to {os.readlink(out)}, which {what}; pass a folder")
    refuse_dangling_link(out, "cannot export to")  # resolving it named the link's target, which would be made
    if resolved == Path.cwd().resolve():  # renaming over it would leave the shell in a deleted folder
        raise MiniGPTError(f"cannot export to {out}: it is the current folder; name a new folder, such as {out / 'hf'}")
    if os.path.isdir(resolved) and resolved.name:
        _recover(resolved)
    if os.path.lexists(resolved) and (not resolved.is_dir() or not resolved.name or _holds_anything(resolved)):
        raise MiniGPTError(f"{out} already exists and is not an empty folder: pass a new folder to export into")
    for above in resolved.parents:
        if os.path.lexists(above):
            if not above.is_dir():
                raise MiniGPTError(f"cannot export to {out}: {above} is a file, not a folder; pass a folder")
            break
    return resolved


def _holds_anything(folder: Path) -> bool:
    """Whether `folder` holds anything but the temporary folders exports into it write in."""
    try:
        return any(not staging.is_temporary(entry, "export", folder.name) for entry in os.listdir(folder))
    except OSError:  # unreadable: not known to be empty
        return True


def _write_error(out: Path, err: OSError) -> MiniGPTError:
    """The one line for an export to `out` that the file system refused."""
    target = Path(os.path.realpath(out))  # a link's target's folder is the one that refused, not the link's
    parent = target if os.path.isdir(target) else target.parent  # an empty folder of yours is written in itself
    if err.errno in (errno.ENOTEMPTY, errno.EEXIST) and os.path.lexists(out):
        return MiniGPTError(f"cannot export to {out}: another export wrote it meanwhile, and it is kept; pass a new folder")
    if err.errno in DISK_FULL:
        return MiniGPTError(f"cannot export to {out}: {err.strerror}; free some space or pass a folder on another disk")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"{parent} cannot be written ({err.strerror})"
    elif err.errno == errno.ENAMETOOLONG:
        reason = "the name is longer than the file system allows"
    elif err.errno == errno.ENOENT and parent.is_dir():
        reason = f"{parent} does not accept new folders"
    else:
        reason = err.strerror or str(err)
    return MiniGPTError(f"cannot export to {out}: {reason}; pass a folder you can write")


def _write_folder(loaded: checkpoint.Loaded, folder: Path, name: str) -> None:
    config, enc = loaded.model.config, loaded.tokenizer
    eot = tok.eot_id(enc)
    state = state_to_hf(loaded.model.state_dict())
    dtype = str(next(iter(state.values())).dtype).removeprefix("torch.")
    _write_json(folder / "config.json", config_to_hf(config, eot, dtype))
    _write_json(folder / "generation_config.json", {"bos_token_id": eot, "eos_token_id": eot})
    weights = folder / "model.safetensors"
    _save_weights(state, weights)
    weights.chmod(stat.S_IMODE((folder / "config.json").stat().st_mode))  # safetensors writes 0600 whatever the umask
    hf_tokenizer.save(enc, folder)
    (folder / "README.md").write_text(model_card(config, enc, name), encoding="utf-8")


def _save_weights(state: dict[str, Tensor], path: Path) -> None:
    """Write `state` as safetensors at `path`. safetensors reports a write the file system refused (a full
    disk, a quota) as its own SafetensorError, "I/O error: ... (os error N)": raised here as the OSError it is."""
    try:
        save_file(state, path, metadata={"format": "pt"})  # transformers needs the format
    except SafetensorError as err:
        failed = re.search(r"\(os error (\d+)\)", str(err))
        if failed is None:
            raise
        code = int(failed.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None


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
        if len(tok.encode(enc, " ".join(words[:n]))) <= block_size // 2:
            prompt = " ".join(words[:n])
            break
    ids = tok.encode(enc, prompt)[: max(1, block_size // 2)]  # a context too short for a word: its first tokens
    return enc.decode(ids), min(EXAMPLE_NEW_TOKENS, block_size - len(ids))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
