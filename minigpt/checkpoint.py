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
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import tiktoken
import torch

from minigpt import tokenizer as tok
from minigpt.errors import MiniGPTError
from minigpt.model import GPT, GPTConfig
from minigpt.payload import MODEL_PREFIX

log = logging.getLogger(__name__)

PAYLOAD_KEY = "minigpt"
CHECKSUM_KEY = "sha256"
TEMP_GLOB = ".*.ckpt.*.tmp"  # what `atomic_save` leaves behind only when killed mid-write


@dataclass
class Loaded:
    """A model ready for inference and its tokenizer."""

    model: GPT
    tokenizer: tiktoken.Encoding


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

    A full disk is a `MiniGPTError` that says so; the previous file at `path` is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
            raise MiniGPTError(
                f"no space left on the device while writing {path}; the previous checkpoint there is kept: "
                "free some space, then resume"
            ) from None
        raise


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _out_of_space(exc: BaseException, folder: Path) -> bool:
    """torch reports a full disk as a RuntimeError ("unexpected pos ..."), so also look at the free space."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


# ---- reading ---------------------------------------------------------------------------------------


def resolve(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or a run folder's ``last.ckpt`` (its ``best.ckpt`` when a crash came between the
    two writes of a validation, so that only ``best.ckpt`` exists)."""
    path = Path(path)
    if not path.is_dir():
        return path
    last, best = path / "last.ckpt", path / "best.ckpt"
    return best if best.is_file() and not last.is_file() else last


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The verified, validated checkpoint dict, loaded safely onto the CPU; `MiniGPTError` for any bad file."""
    path = resolve(path)
    if not path.is_file():
        raise MiniGPTError(f"checkpoint {path} not found: pass --ckpt RUN_DIR/last.ckpt (or best.ckpt) of a training run")
    ckpt = _load_weights_only(path)
    if not isinstance(ckpt, dict) or PAYLOAD_KEY not in ckpt or "state_dict" not in ckpt:
        raise MiniGPTError(f"{path} is not a minigpt checkpoint (no model or tokenizer inside); train one with train.py")
    _verify(ckpt, path)
    try:
        validate(ckpt)
    except ValueError as err:
        raise MiniGPTError(f"{path} is not a valid minigpt checkpoint: {err}") from None
    return ckpt


def read_plain(path: str | os.PathLike[str]) -> Any:
    """Any file `torch.save` wrote, loaded onto the CPU as tensors and plain data only (never code), its
    checksum verified if it has one: how Lightning's own files are read (ddp_spawn hands weights back in one)."""
    ckpt = _load_weights_only(Path(path))
    if isinstance(ckpt, dict) and CHECKSUM_KEY in ckpt:
        _verify(ckpt, Path(path))
    return ckpt


def _load_weights_only(path: Path) -> Any:
    try:
        # weights_only=True explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot override an explicit True.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "weights only load failed" in str(exc).lower():
            raise MiniGPTError(
                f"refusing to load {path}: it is corrupt, or holds objects other than tensors and plain data "
                "(possibly code); use a checkpoint written by train.py"
            ) from None
        raise MiniGPTError(f"cannot read checkpoint {path}: the file is corrupt or not a checkpoint ({type(exc).__name__})") from None


def _verify(ckpt: dict[str, Any], path: Path) -> None:
    stored = ckpt.get(CHECKSUM_KEY)
    if stored is None:
        log.warning("%s has no checksum (written by an older minigpt): its integrity cannot be verified", path)
        return
    if stored != checksum(ckpt):
        raise MiniGPTError(
            f"{path} is corrupt: its contents do not match the checksum stored in it; use another checkpoint "
            "(e.g. best.ckpt) or retrain"
        )


def validate(ckpt: dict[str, Any]) -> None:
    """Raise ValueError naming the first problem of the payload and weights; allocates nothing for the model."""
    payload, state = ckpt[PAYLOAD_KEY], ckpt["state_dict"]
    if not isinstance(payload, dict) or not {"model_config", "tokenizer"} <= payload.keys():
        raise ValueError("its payload lacks model_config or tokenizer")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("its state_dict is not a mapping of tensors")
    config = _model_config(payload)
    _check_consistent(config, payload, ckpt.get("hyper_parameters"))
    with torch.device("meta"):  # shapes only: a config asking for terabytes allocates nothing
        expected = {MODEL_PREFIX + k: v.shape for k, v in GPT(config).state_dict().items()}
    extra = sorted(k for k in state if k.startswith(MODEL_PREFIX) and k not in expected)
    if extra:
        raise ValueError(f"weight {extra[0]} does not belong to the model its config describes")
    for key, shape in expected.items():
        if key not in state:
            raise ValueError(f"weight {key} is missing")
        if state[key].shape != shape:
            raise ValueError(f"weight {key} has shape {tuple(state[key].shape)}, the config implies {tuple(shape)}")
    enc = tok.from_dict(payload["tokenizer"])
    if enc.n_vocab != config.vocab_size:
        raise ValueError(f"its tokenizer has {enc.n_vocab} tokens but the model has {config.vocab_size}")


def _model_config(payload: dict[str, Any]) -> GPTConfig:
    raw = payload["model_config"]
    if not isinstance(raw, dict):
        raise ValueError("model_config is not a mapping")
    known = {f.name for f in fields(GPTConfig)}
    unknown = sorted(set(raw) - known, key=str)
    if unknown:
        raise ValueError(f"model_config has unknown key {unknown[0]!r}")
    missing = sorted({"vocab_size", "block_size", "n_layer", "n_head", "n_embd"} - set(raw))
    if missing:
        raise ValueError(f"model_config lacks {missing[0]!r}")
    return GPTConfig(**raw)


def _check_consistent(config: GPTConfig, payload: dict[str, Any], hparams: Any) -> None:
    """The shape is recorded three times (payload, training config, Lightning's hparams); all must agree,
    since fields like n_head change the model without changing any weight's shape."""
    train_config = payload.get("train_config")
    records = {
        "training config": train_config.get("model") if isinstance(train_config, dict) else None,
        "hyper_parameters": hparams.get("model_config") if isinstance(hparams, dict) else None,
    }
    for source, other in records.items():
        if not isinstance(other, dict):
            continue
        for key, value in asdict(config).items():
            if key in other and other[key] != value:
                raise ValueError(f"model_config says {key}={value!r} but its {source} says {other[key]!r}")


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Loaded:
    """Rebuild the model (in eval mode, on `device`) and tokenizer from a checkpoint file or run folder."""
    path = resolve(path)
    return rebuild(read(path), path, device)


def rebuild(ckpt: dict[str, Any], path: Path, device: str | torch.device = "cpu") -> Loaded:
    """`load` for a checkpoint already `read` from `path` (for a caller that also wants its other contents)."""
    payload = ckpt[PAYLOAD_KEY]
    state = {k.removeprefix(MODEL_PREFIX): v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise MiniGPTError(
            f"{path} has NaN or infinite weights (its run diverged): use an earlier checkpoint, or retrain "
            "with a lower --optim.lr"
        )
    model = GPT(GPTConfig(**payload["model_config"]))
    model.load_state_dict(state)
    return Loaded(model.to(device).eval(), tok.from_dict(payload["tokenizer"]))
