"""A training run's settings as one typed record, `TrainConfig`, with its checks; `TrainConfig.load` (Python)
and `TrainConfig.from_options` (the command's argv) resolve one from the bundled defaults, a config file and
single options as `minigpt train` does (the resolution itself: `minigpt.training.options`).

Each default is written once. A field default (here, in `OptimConfig`, `GPTConfig` or Lightning's Trainer) holds
unless default.yaml, the quickstart recipe (what a plain run trains on, its size and length), sets another value;
it never repeats one. The options only default.yaml gives (data, tokenizer, batch_size, ...) have no field default.

Importing this module does not import Lightning (only resolving a config does, for the Trainer's options), so
that `TrainConfig` can be built, read and written where Lightning is not wanted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, make_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from minigpt import checks
from minigpt.data.prepare import DEFAULT_VAL_FRACTION, check_val_fraction
from minigpt.errors import MiniGPTError
from minigpt.model import MAX_SIZE, GPTConfig
from minigpt.training import launch
from minigpt.training.machine import MAX_THREADS, MAX_WORKERS, check_devices, check_fits_in_memory

GROUPS = ("model", "optim", "trainer")
"""The nested option groups; every other option is top-level."""
MAX_SAMPLES = 100  # printed for a person at the end of training; more is a typo, not a wish
MAX_LAYERS = 1024  # deeper than any GPT trained so far; more is a typo that would take hours to build
EPOCH_OPTIONS = {"limit_train_batches": (1.0,), "overfit_batches": (0, 0.0), "check_val_every_n_epoch": (1,),
                 "max_epochs": (-1,), "min_epochs": (0,), "reload_dataloaders_every_n_epochs": (0,)}  # fmt: skip
"""Trainer options counted in epochs or batches of one, with the values (besides unset) that change nothing: any
other means nothing for an endless stream, and some crash Lightning mid-fit (check_val_every_n_epoch 0 divides
by zero). Types count: limit_train_batches 1 is one batch, 1.0 all of them."""
MAX_STEPS = 10**12  # years of steps on any machine; more is a typo (and overflows the time arithmetic)


OptimizerName = Literal["adamw", "muon"]
Schedule = Literal["cosine", "wsd"]


@dataclass
class OptimConfig:
    """AdamW or Muon; linear warmup, then cosine or warmup-stable-decay."""

    name: OptimizerName = "adamw"
    """AdamW, or Muon on hidden matrices."""
    # muon: Muon for the blocks' weight matrices (at muon_lr), AdamW (at lr) for the embeddings and the head tied
    # to them, biases and layer-norm gains (--help stays within a screen; docs/training.md says more).
    lr: float = 1e-3
    """AdamW's peak learning rate."""  # reached after the warmup
    min_lr_ratio: float = 0.1
    """The lr decays to lr * min_lr_ratio."""  # at the last step; muon_lr alike
    warmup_steps: int = 100
    """Steps of linear warmup from 0 to lr."""
    schedule: Schedule = "cosine"
    """Cosine, or warmup-stable-decay."""
    # wsd holds the peak after the warmup, then decays linearly over the last decay_fraction of the steps.
    decay_fraction: float = 0.2
    """Share of steps wsd spends decaying."""
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to matrices and embeddings only."""
    beta1: float = 0.9
    """AdamW's first-moment decay, in [0, 1)."""
    beta2: float = 0.99
    """AdamW's second-moment decay, in [0, 1)."""
    muon_lr: float = 0.02
    """Muon's peak learning rate."""
    # Each matrix's step is scaled by sqrt(max(1, rows / columns)), as in Keller Jordan's Muon (torch's default);
    # momentum is Muon's usual 0.95 (Nesterov).

    def __post_init__(self) -> None:
        """Check ranges here, so a bad value fails before training rather than inside torch."""
        rules = {
            "name": (self.name in get_args(OptimizerName), f"must be one of {', '.join(get_args(OptimizerName))}"),
            "lr": (_finite(self.lr) and self.lr > 0, "must be a positive number"),
            "min_lr_ratio": (_finite(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1, "must be in [0, 1]"),
            "warmup_steps": (type(self.warmup_steps) is int and self.warmup_steps >= 0, "must be an integer >= 0"),
            "schedule": (self.schedule in get_args(Schedule), f"must be one of {', '.join(get_args(Schedule))}"),
            "decay_fraction": (_finite(self.decay_fraction) and 0 <= self.decay_fraction <= 1, "must be in [0, 1]"),
            "weight_decay": (_finite(self.weight_decay) and self.weight_decay >= 0, "must be a number >= 0"),
            "beta1": (_finite(self.beta1) and 0 <= self.beta1 < 1, "must be in [0, 1)"),
            "beta2": (_finite(self.beta2) and 0 <= self.beta2 < 1, "must be in [0, 1)"),
            "muon_lr": (_finite(self.muon_lr) and self.muon_lr > 0, "must be a positive number"),
        }
        for name, (ok, rule) in rules.items():
            if not ok:
                raise ValueError(f"{name} {rule}, got {getattr(self, name)!r}")
        # Each step scales the decayed weights by (1 - lr * weight_decay): at or past 1 it zeroes or flips them.
        for lr_name in ("lr", "muon_lr") if self.name == "muon" else ("lr",):
            lr = getattr(self, lr_name)
            if lr * self.weight_decay >= 1:
                raise ValueError(f"{lr_name} * weight_decay must be below 1, got {lr:g} * {self.weight_decay:g}")


def _finite(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


# The model's shape as the user sets it: GPTConfig's fields and defaults but vocab_size, which the tokenizer
# gives. Derived rather than written out, so that a field added to GPTConfig is an option here too.
ModelConfig = make_dataclass(
    "ModelConfig",
    [(f.name, f.type, field(default=f.default)) for f in fields(GPTConfig) if f.name != "vocab_size"],
    namespace={"__doc__": "The model's shape: `minigpt.model.GPTConfig` without vocab_size.", "__module__": __name__},
)


def _option(text: str, default: Any = MISSING) -> Any:
    """A top-level option of `minigpt train`: its field default (none: default.yaml's) and its --help line."""
    return field(default=default, metadata={"help": text})


@dataclass(kw_only=True)
class TrainConfig:
    """Everything one training run needs: the checked settings `minigpt.training.run.train` takes. Build one
    with `load` (as the command would), or from a run's config.yaml with `from_dict`."""

    data: str = _option("corpus: a file, folder, glob, hf:NAME or builtin")
    tokenizer: str = _option("bytes | bpe:<vocab_size> | gpt2 | cl100k_base")
    resume: str | None = _option("continue a run (folder or last.ckpt)", None)
    init: str | None = _option(
        "start from pretrained weights: a checkpoint or run folder, a GPT-2 folder, or hf:REPO_ID", None
    )
    out_dir: str | None = _option("run folder (unset: runs/<config>[-N])", None)
    seed: int = _option("seeds weights, dropout and window order", 1337)
    batch_size: int = _option("windows per training batch (per device)")
    val_fraction: float = _option("share of --data held out for validation", DEFAULT_VAL_FRACTION)
    val_data: str | None = _option("a validation corpus (a --data spec)", None)
    val_windows: int = _option("fixed validation windows evaluated each time")
    num_workers: int = _option("DataLoader worker processes", 0)
    cache_dir: str | None = _option("shard cache (unset: $MINIGPT_CACHE or ~/.cache/minigpt)", None)
    target_loss: float | None = _option("stop at this val loss (nats/token)", None)
    compile: bool | None = _option("torch.compile the training step (unset: on CUDA GPUs only)", None)
    threads: int | None = _option("CPU threads per process", None)
    samples: int = _option("samples printed when training ends")
    sample_tokens: int = _option("length of each printed sample")
    model: ModelConfig = field(default_factory=ModelConfig)  # type: ignore[valid-type]
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    """Lightning Trainer arguments (those minigpt sets itself excepted); unset ones take Lightning's defaults."""
    config: str | None = None
    """The config file the settings came from; its name names the default run folder (runs/<name>[-N])."""
    given: frozenset[str] = frozenset()
    """The options set one by one (`model.n_layer`, `tokenizer`, ...), not by a config file: a pretrained start
    (`init`) refuses those that contradict its model."""

    @classmethod
    def load(cls, config: str | Path | None = None, **overrides: Any) -> TrainConfig:
        """The checked settings `minigpt train --config CONFIG --OPTION VALUE ...` would train with: the bundled
        defaults, then `config` (a YAML file or a bundled config's name), then `overrides` by option name, the
        groups as dicts: `load("shakespeare_cpu", data="my.txt", model={"n_layer": 2}, trainer={"max_steps": 200})`.
        `resume="runs/x"` starts from that run's own config, as --resume does. Raises `MiniGPTError`."""
        from minigpt.training.options import config_path, resolve  # it builds on TrainConfig: imported on use

        files = ["--config", config_path(checks.path(config, "config"))] if config is not None else []
        # A YAML text is a config too: the values keep their Python types, and resolve exactly as the command's.
        values = ["--config", yaml.safe_dump(_as_yaml(overrides), sort_keys=False)] if overrides else []
        given = {f"{key}.{sub}" for key in GROUPS if isinstance(overrides.get(key), Mapping) for sub in overrides[key]}
        return resolve([*files, *values], given | {key for key in overrides if key not in GROUPS}, overrides)

    @classmethod
    def from_options(cls, options: Sequence[str]) -> TrainConfig:
        """The checked settings of command-line options (`--config NAME|FILE`, `--resume RUN`, `--a.b VALUE`,
        with underscores), each applied in turn over the bundled defaults. Raises `MiniGPTError`."""
        from minigpt.training.options import resolve, with_config_paths  # see load

        given = {arg[2:].split("=", 1)[0] for arg in options if arg.startswith("--")}
        return resolve(with_config_paths(list(options)), given)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **extra: Any) -> TrainConfig:
        """The settings `to_dict` wrote (a run's config.yaml); an option it leaves out takes its default.
        `extra` sets the fields that are not options (`config`, `given`). Not checked: see `validate`."""
        try:
            # A group with every line commented out (`model:`) is empty, not null.
            model, optim = ModelConfig(**data.get("model") or {}), OptimConfig(**data.get("optim") or {})
            return cls(**{**data, "model": model, "optim": optim, "trainer": dict(data.get("trainer") or {}), **extra})
        except ValueError as err:  # OptimConfig checks its ranges as it is made
            raise MiniGPTError(f"--optim.{err}") from None
        except TypeError as err:  # an unknown option, or a required one missing
            raise MiniGPTError(f"not a training config: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """The resolved settings as plain data, as config.yaml and every checkpoint hold them: the options in
        --help's order, unset (None) ones left out, without `resume` (which is this invocation's, not the run's)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if "help" in f.metadata}
        data.pop("resume")
        data.update(model=asdict(self.model), optim=asdict(self.optim), trainer=dict(self.trainer))
        return _without_none(data)

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The model these settings describe, for a tokenizer of `vocab_size` tokens."""
        return GPTConfig(**asdict(self.model), vocab_size=vocab_size)

    def validate(self) -> None:
        """Check every value before anything is written, in every process alike (only rank 0 reports): ranges
        here, the data's, model's and optimizer's own checks, and what this machine can do. Raises
        `MiniGPTError` naming the option."""
        _check_types(self)
        _check_ranges(self)
        if self.val_data is None:
            check_val_fraction(self.val_fraction, "--val_fraction")
        try:
            model = self.model_config(vocab_size=257)  # the smallest vocabulary; checked again with the real one
        except ValueError as err:
            raise MiniGPTError(f"--model.{err}") from None
        try:
            OptimConfig(**asdict(self.optim))  # its ranges again, for a config changed after it was made
        except ValueError as err:
            raise MiniGPTError(f"--optim.{err}") from None
        trainer = self.trainer = launch.fit_to_launcher(self.trainer)  # torchrun's or SLURM's processes, or refused
        check_devices(trainer.get("accelerator"), trainer.get("strategy"), trainer.get("devices"))
        check_fits_in_memory(model, self.batch_size, trainer.get("accelerator"))


def _as_yaml(value: Any, name: str = "") -> Any:
    """`value`, an option's (or a group of them), as YAML can hold it: a path as its text, a numpy or torch
    scalar as the Python number it holds. Raises `MiniGPTError` for what no option takes."""
    if isinstance(value, Mapping):
        return {key: _as_yaml(item, f"{name}.{key}" if name else str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_yaml(item, name) for item in value]
    value = _plain(value)  # np.float32(0.1) as 0.1, torch.tensor(3) as 3, a path as its text
    if isinstance(value, int) and abs(value) >= 10**300:  # no option takes it; past 4,300 digits str() fails
        raise MiniGPTError(f"{name or 'an option'} is too large: got {_number(value)}")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise MiniGPTError(f"{name or 'an option'} takes text, a number or true/false, got {type(value).__name__}")


def _check_types(config: TrainConfig) -> None:
    """Each option holds its type: a config changed in Python after it was resolved (`config.batch_size = 2.5`)
    reaches no parser. Whole numbers are ints, numbers ints or floats, never bools; numpy's and torch's numbers and
    paths are first made the plain values `TrainConfig.load` makes of them (`dataclasses.replace(config,
    seed=np.int64(1))`)."""
    for group, kind in (("model", ModelConfig), ("optim", OptimConfig)):
        if not isinstance(getattr(config, group), kind):
            raise MiniGPTError(
                f"{group} must be the {kind.__name__} record, got {type(getattr(config, group)).__name__}: change one option "
                f"with dataclasses.replace(config.{group}, ...), or load the config with {group}={{...}}"
            )
    if not isinstance(config.trainer, dict):
        raise MiniGPTError(f"trainer must be a dict of Trainer settings, got {type(config.trainer).__name__}")
    for holder in (config, config.model, config.optim):
        for f in fields(holder):
            value = getattr(holder, f.name)
            if (plain := _plain(value)) is not value:
                setattr(holder, f.name, plain)
    config.trainer = {key: _plain(value) for key, value in config.trainer.items()}
    hints = get_type_hints(TrainConfig)
    for f in fields(config):
        if "help" in f.metadata:
            _check_type(f"--{f.name}", getattr(config, f.name), hints[f.name])
    for group, kind in (("model", ModelConfig), ("optim", OptimConfig)):
        hints = get_type_hints(kind)
        for f in fields(kind):
            _check_type(f"--{group}.{f.name}", getattr(getattr(config, group), f.name), hints[f.name])


def _plain(value: Any) -> Any:
    """A path as its text, a numpy or torch scalar as the number it holds (see `checks.scalar`), else `value`."""
    return os.fspath(value) if isinstance(value, os.PathLike) else checks.scalar(value)


def _check_type(option: str, value: Any, hint: Any) -> None:
    kinds = get_args(hint) if get_origin(hint) is UnionType else (hint,)
    allowed = {
        int: lambda v: type(v) is int,
        float: lambda v: type(v) in (int, float),
        str: lambda v: type(v) is str,
        bool: lambda v: type(v) is bool,
        type(None): lambda v: v is None,
    }
    for kind in kinds:
        if get_origin(kind) is Literal:
            if value in get_args(kind) and type(value) is str:
                return
        elif allowed[kind](value):
            return
    names = {int: "a whole number", float: "a number", str: "text", bool: "true or false", type(None): "unset"}
    wanted = " or ".join(
        f"one of {', '.join(get_args(k))}" if get_origin(k) is Literal else names[k] for k in kinds
    )
    raise MiniGPTError(f"{option} must be {wanted}, got {value!r}"[:300])


def _number(n: int) -> str:
    """A whole number for a message: a huge one by its size (10**5000 has more digits than str() will write)."""
    return f"{n}" if abs(n) < 10**15 else f"a {n.bit_length()}-bit number"


def _check_ranges(config: TrainConfig) -> None:
    c, trainer = config, config.trainer
    steps, accumulate = trainer.get("max_steps"), trainer.get("accumulate_grad_batches")
    interval, clip = trainer.get("val_check_interval"), trainer.get("gradient_clip_val")
    rules = [
        (1 <= c.batch_size <= MAX_SIZE, f"--batch_size must be from 1 to {MAX_SIZE:,}, got {_number(c.batch_size)}"),
        (1 <= c.val_windows <= MAX_SIZE, f"--val_windows must be from 1 to {MAX_SIZE:,}, got {_number(c.val_windows)}"),
        (0 <= c.num_workers <= MAX_WORKERS, f"--num_workers must be from 0 to {MAX_WORKERS}, got {c.num_workers}"),
        (0 <= c.seed < 2**32, f"--seed must be in [0, 2**32), got {c.seed}"),
        (0 <= c.samples <= MAX_SAMPLES, f"--samples must be from 0 to {MAX_SAMPLES}, got {c.samples}"),
        (1 <= c.sample_tokens <= MAX_SIZE, f"--sample_tokens must be from 1 to {MAX_SIZE:,}, got {_number(c.sample_tokens)}"),
        (c.threads is None or 1 <= c.threads <= MAX_THREADS, f"--threads must be from 1 to {MAX_THREADS}, got {c.threads}"),
        (c.target_loss is None or (math.isfinite(c.target_loss) and c.target_loss > 0),
         f"--target_loss must be a positive number of nats/token, got {c.target_loss}"),
        (c.model.n_layer <= MAX_LAYERS, f"--model.n_layer must be at most {MAX_LAYERS}, got {c.model.n_layer}"),
        (type(steps) is int and steps > 0, "set --trainer.max_steps to a positive whole number"),
        (type(steps) is not int or steps <= MAX_STEPS, f"--trainer.max_steps must be at most {MAX_STEPS:.0e}, got {steps}"),
        # Lightning itself would divide by these mid-fit, or (a negative clip) silently flip the gradients.
        (accumulate is None or (type(accumulate) is int and accumulate >= 1),
         "--trainer.accumulate_grad_batches must be a whole number, at least 1"),
        (clip is None or (checks.is_real(clip) and clip >= 0), f"--trainer.gradient_clip_val must be a number, 0 or more, got {clip!r}"[:300]),
        # Training is one endless stream: a fraction of an epoch never comes. Times (DD:HH:MM:SS) go to Lightning.
        (not isinstance(interval, (int, float)) or (type(interval) is int and interval >= 1),
         f"--trainer.val_check_interval must be a whole number of steps (or a time, DD:HH:MM:SS), got {interval}"),
    ]  # fmt: skip
    for ok, message in rules:
        if not ok:
            raise MiniGPTError(message)
    for name, harmless in EPOCH_OPTIONS.items():
        value = trainer.get(name)
        if value is not None and not any(type(value) is type(h) and value == h for h in harmless):
            raise MiniGPTError(
                f"--trainer.{name} does not apply here: training is one endless stream of random windows, with no "
                "epochs; count it in steps (--trainer.max_steps, --trainer.val_check_interval)"
            )
    for name in ("resume", "init", "out_dir", "val_data", "cache_dir"):
        value = getattr(config, name)
        if value == "":
            raise MiniGPTError(f"--{name} is empty: give a path, or leave the option out")


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _without_none(v) if isinstance(v, dict) else v for k, v in data.items() if v is not None}
