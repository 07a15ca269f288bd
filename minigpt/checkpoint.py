"""Self-contained checkpoints: weights plus everything needed to use them (no Lightning import here).

A checkpoint is a Lightning checkpoint dict with two extra keys: ``"minigpt"``, holding plain data (model
config, tokenizer ranks/pattern/specials, training config, shard meta: see `minigpt.payload`), and
``"sha256"``, a digest of everything else in the file. Every read:

- unpickles with ``weights_only=True`` (tensors and plain data only; no code in a file ever runs),
- verifies the digest (a flipped byte in weights, optimizer state or payload is reported as corruption;
  torch's zip reader checks no CRCs),
- validates the payload (types, ranges, weight shapes against the config, tokenizer against the vocab)
  before anything is allocated from it.

Saving is atomic: a temporary file beside the target, fsync, rename, fsync of the folder.

Which checkpoint of a run folder: a run writes ``last.ckpt`` (where it stopped) and ``best.ckpt`` (its lowest
validation loss, the one its model card reports). To *use* a model (generate, attention, eval, export,
``train --init``, the samples and card at the end of a run), a folder means its ``best.ckpt``, else its
``last.ckpt`` (`file_to_use`); to *resume* training (``train --resume``), it means ``last.ckpt``, else
``best.ckpt`` (`file_to_resume`). Either fallback covers a crash between the two writes of a validation.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken
import torch

from minigpt import errors
from minigpt.data.prepare import DEFAULT_VAL_FRACTION
from minigpt.errors import DISK_FULL, DiskFull, MiniGPTError
from minigpt.model import GPT, GPTConfig
from minigpt.payload import MODEL_PREFIX, Payload, model_config_of

log = logging.getLogger(__name__)

PAYLOAD_KEY = "minigpt"
CHECKSUM_KEY = "sha256"
TEMP_GLOB = ".*.ckpt.*.tmp"  # what `atomic_save` leaves behind only when killed mid-write


@dataclass
class Loaded:
    """A model ready for inference, its tokenizer, and what its checkpoint records."""

    model: GPT
    tokenizer: tiktoken.Encoding
    payload: Payload | None = None
    """None for a model that was not loaded from a minigpt checkpoint (a Hugging Face one)."""

    @property
    def val_fraction(self) -> float:
        """The share of its corpus the model's run held out for validation: as its checkpoint records it, else
        train's default (as for a Hugging Face model, which records none)."""
        return self.payload.val_fraction if self.payload is not None else DEFAULT_VAL_FRACTION


# ---- integrity ------------------------------------------------------------------------------------


def checksum(ckpt: dict[str, Any]) -> str:
    """SHA-256 over every value of `ckpt` but the checksum itself: tensor bytes, shapes, dtypes, plain data."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in ckpt.items() if k != CHECKSUM_KEY})
    return digest.hexdigest()


def _feed(digest: Any, obj: Any) -> None:
    """Hash `obj` canonically: the same structure after a save/load round trip gives the same bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        digest.update(b"D%d;" % len(obj))
        for key in sorted(obj, key=repr):
            _feed(digest, key)
            _feed(digest, obj[key])
    elif isinstance(obj, (list, tuple)):
        digest.update(b"L%d;" % len(obj))
        for item in obj:
            _feed(digest, item)
    elif isinstance(obj, bytes):
        digest.update(b"B%d;" % len(obj) + obj)
    else:
        text = repr(obj)
        digest.update(f"{type(obj).__name__}{len(text)};{text}".encode())


def atomic_save(ckpt: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Save `ckpt` (with its checksum added) so that `path` holds either the old file or the complete new one.

    A full disk is a `DiskFull` error that says so; the previous file at `path` is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.is_file()
    ckpt = {**ckpt, CHECKSUM_KEY: checksum(ckpt)}
    # Not mkstemp: its 0600 mode would make checkpoints private; open() applies the user's umask.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself must survive a power cut
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and _out_of_space(exc, path.parent):
            kept = "; the previous checkpoint there is kept" if existed else ""
            raise DiskFull(f"no space left on the device while writing {path}{kept}: free some space") from None
        if isinstance(exc, OSError):  # named by the checkpoint, not by its temporary file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _out_of_space(exc: BaseException, folder: Path) -> bool:
    """torch reports a full disk as a RuntimeError ("unexpected pos ..."), so also look at the free space."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return True
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


# ---- reading ---------------------------------------------------------------------------------------


def file_to_use(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file as it is; for a run folder, the checkpoint to use a model from: its ``best.ckpt``, else
    its ``last.ckpt``."""
    return _in_run_folder(Path(path), "best.ckpt", "last.ckpt")


def file_to_resume(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file as it is; for a run folder, the checkpoint to resume training from: its ``last.ckpt``,
    else its ``best.ckpt``."""
    return _in_run_folder(Path(path), "last.ckpt", "best.ckpt")


def check_lookup(source: str | os.PathLike[str]) -> None:
    """A model source the file system refuses to look up, as one line (see `errors.check_lookup`)."""
    errors.check_lookup(source, "a model", "give a checkpoint, run folder or hf:REPO")


def _in_run_folder(path: Path, first: str, fallback: str) -> Path:
    check_lookup(path)
    if not path.is_dir():
        return path
    if not (path / first).exists() and not (path / fallback).exists():
        raise MiniGPTError(
            f"{str(path)!r} holds no checkpoint ({first} or {fallback}): give a training run's folder, or a checkpoint file"
        )
    return path / fallback if (path / fallback).is_file() and not (path / first).is_file() else path / first


def step_of(path: str | os.PathLike[str]) -> int | None:
    """The training step a checkpoint file records, read without loading its weights into memory (mapped), or None
    if it cannot be read: for messages about what is saved."""
    try:
        step = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step")
    except Exception:  # noqa: BLE001 - any unreadable file: the message then names no step
        return None
    return step if type(step) is int else None


def read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Payload]:
    """The verified, validated checkpoint dict of a file or run folder (`file_to_use`), loaded safely onto the
    CPU, and its payload record; `MiniGPTError` for any bad file."""
    return _read(file_to_use(path))


def _read(path: Path) -> tuple[dict[str, Any], Payload]:
    if not path.is_file():
        found = "is not a regular file" if path.exists() else "not found"  # /dev/null, a FIFO
        raise MiniGPTError(f"checkpoint {str(path)!r} {found}: give a training run's folder, or its last.ckpt or best.ckpt")
    ckpt = _load_weights_only(path)
    if not isinstance(ckpt, dict) or PAYLOAD_KEY not in ckpt or "state_dict" not in ckpt:
        raise MiniGPTError(f"{path} is not a minigpt checkpoint (no model or tokenizer inside); train one with minigpt")
    _verify(ckpt, path)
    try:
        return ckpt, validate(ckpt)
    except ValueError as err:
        raise MiniGPTError(f"{path} is not a valid minigpt checkpoint: {err}") from None


def read_plain(path: str | os.PathLike[str]) -> Any:
    """Any file `torch.save` wrote, loaded onto the CPU as tensors and plain data only (never code), its
    checksum verified if it has one: how Lightning's own files are read (ddp_spawn hands weights back in one)."""
    ckpt = _load_weights_only(Path(path))
    if isinstance(ckpt, dict) and CHECKSUM_KEY in ckpt:
        _verify(ckpt, Path(path))
    return ckpt


def _load_weights_only(path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol draws torch's warning before the refusal below
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            # weights_only=True explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot override an explicit True.
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "weights only load failed" in str(exc).lower():
            raise MiniGPTError(
                f"refusing to load {path}: it is corrupt, or holds objects other than tensors and plain data "
                "(possibly code); use a checkpoint that minigpt wrote"
            ) from None
        raise MiniGPTError(
            f"cannot read checkpoint {path}: the file is corrupt or not a checkpoint ({type(exc).__name__}); {_instead(path)}"
        ) from None


def _verify(ckpt: dict[str, Any], path: Path) -> None:
    stored = ckpt.get(CHECKSUM_KEY)
    if stored is None:
        log.warning("%s has no checksum (written by an older minigpt): its integrity cannot be verified", path)
        return
    if stored != checksum(ckpt):
        raise MiniGPTError(f"{path} is corrupt: its contents do not match the checksum stored in it; {_instead(path)}")


def _instead(path: Path) -> str:
    """What to use in place of a damaged checkpoint: the other one of its run, if it has one."""
    other = {"best.ckpt": "last.ckpt", "last.ckpt": "best.ckpt"}.get(path.name)
    if other and (path.parent / other).is_file():
        return f"use {path.parent / other} instead, or retrain"
    return "use another checkpoint, or retrain"


def validate(ckpt: dict[str, Any]) -> Payload:
    """The checkpoint's payload record, once it and the weights agree; else ValueError naming the first problem.
    Allocates nothing for the model."""
    config, state = model_config_of(ckpt[PAYLOAD_KEY]), ckpt["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("its state_dict is not a mapping of tensors")
    # before the tokenizer is built: its vocabulary is checked against this config
    check_shapes(config, {k: v.shape for k, v in state.items()}, MODEL_PREFIX, "its model_config")
    payload = Payload.from_dict(ckpt[PAYLOAD_KEY])
    hparams = ckpt.get("hyper_parameters")  # Lightning's copy of the shape: a third record that must agree
    payload.check_agrees(hparams.get("model_config") if isinstance(hparams, dict) else None, "hyper_parameters")
    return payload


_LAYER = re.compile(r"transformer\.h\.(\d+)\.")


def check_shapes(
    config: GPTConfig, shapes: Mapping[str, Sequence[int]], prefix: str = "", described_by: str = "the config"
) -> None:
    """Raise ValueError naming the first difference between the tensors `shapes` describes (the model's under
    `prefix`; others are ignored) and the state dict `config` describes (`described_by` names it in messages).

    Nothing is built: the layers stored are counted before the expected state is listed, so a config declaring
    a million layers costs no more than the weights it comes with."""
    names = [name.removeprefix(prefix) for name in shapes if name.startswith(prefix)]
    layers = len({match.group(1) for name in names if (match := _LAYER.match(name))})
    if layers != config.n_layer:
        raise ValueError(f"{described_by} declares n_layer={config.n_layer} but the weights hold {layers} layers")
    expected = config.state_shapes()
    strangers = [name for name in names if name not in expected]
    if strangers:
        raise ValueError(f"weight {prefix}{strangers[0]} does not belong to the model {described_by} describes")
    for name, shape in expected.items():
        if prefix + name not in shapes:
            raise ValueError(f"weight {prefix}{name} is missing")
        stored = tuple(shapes[prefix + name])
        if stored != shape:
            raise ValueError(f"weight {prefix}{name} has shape {stored}, {described_by} implies {shape}")


def check_finite(state: Mapping[str, torch.Tensor], message: str) -> None:
    """Raise `MiniGPTError(message)` if a floating-point weight of `state` is NaN or infinite: such a model samples
    nothing, scores NaN and exports garbage."""
    checked = (torch.float32, torch.float16, torch.bfloat16, torch.float64)  # torch has no isfinite for float8
    if not all(torch.isfinite(v if v.dtype in checked else v.float()).all() for v in state.values() if v.is_floating_point()):
        raise MiniGPTError(message)


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Loaded:
    """Rebuild the model (in eval mode, on `device`), its tokenizer and payload from a checkpoint file or run
    folder (`file_to_use`)."""
    path = file_to_use(path)
    ckpt, payload = _read(path)
    state = {k.removeprefix(MODEL_PREFIX): v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    check_finite(state, f"{path} has NaN or infinite weights (its run diverged): use an earlier checkpoint, or retrain "
                 "with a lower --optim.lr")  # fmt: skip
    model = GPT(payload.model_config)
    model.load_state_dict(state)
    return Loaded(model.to(device).eval(), payload.tokenizer, payload)
