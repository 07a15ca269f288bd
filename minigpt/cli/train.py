"""`minigpt train`: a YAML config + dotted overrides, parsed and checked, then `minigpt.training.run.train`."""

from __future__ import annotations

import argparse
import inspect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter, Namespace

from minigpt import checkpoint
from minigpt.training import launch
from minigpt.cli import USER_ERROR_EXIT, configure_logging, run
from minigpt.cli.common import canonical_options
from minigpt.errors import MiniGPTError, ReportedByRankZero
from minigpt.training.module import OptimConfig
from minigpt.training.machine import MAX_THREADS, MAX_WORKERS, check_devices, check_fits_in_memory
from minigpt.model import GPTConfig
from minigpt.data.prepare import check_val_fraction

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
"""The bundled configs (package data); `default.yaml` holds every default a plain run uses."""
DEFAULT_CONFIG = CONFIGS / "default.yaml"
# Set by minigpt itself (run folder, logger, checkpointing); not offered as --trainer.* options.
TRAINER_SKIP = {"logger", "callbacks", "plugins", "default_root_dir", "enable_checkpointing", "enable_autolog_hparams"}
COMMON_TRAINER = {  # the Trainer options `--help` shows; `--help_all` shows every one, with Lightning's own words
    "max_steps": "optimizer steps to train for",
    "val_check_interval": "validate, log and save best.ckpt every N steps",
    "accelerator": "cpu, gpu, mps or auto",
    "devices": "devices (processes) per machine, e.g. 2",
    "strategy": "auto, ddp, ddp_spawn, fsdp, ... (see More than one device in the README)",
    "num_nodes": "machines taking part in a distributed run",
    "precision": "32-true, bf16-mixed, 16-mixed; unset: bf16-mixed on GPUs that support it, else 32-true",
    "accumulate_grad_batches": "batches whose gradients make one optimizer step",
    "gradient_clip_val": "clip the gradient norm to this value (0: off)",
    "log_every_n_steps": "log the training metrics every N steps",
}
USAGE = "minigpt train [--config NAME|FILE] [--resume RUN] [--OPTION VALUE ...]"


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help without each option's type (its default shows it), so --help stays short."""

    def _get_type_str(self, action: argparse.Action) -> None:
        return None


def build_parser(every_trainer_option: bool = True) -> ArgumentParser:
    """The command line: every option has a dotted name and can also be set in a YAML config; defaults come
    from the bundled default.yaml (what --help shows is what a plain run uses)."""
    from jsonargparse import set_parsing_settings
    from lightning import Trainer  # deferred: building the parser is all `--help` needs of Lightning

    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # the model's and optimizer's field docs
    parser = ArgumentParser(
        prog="minigpt train", usage=USAGE, description="Train a GPT with PyTorch Lightning.",
        default_config_files=[str(DEFAULT_CONFIG)], exit_on_error=False, formatter_class=HelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--config", action=ActionConfigFile,
        help="a YAML file, or a bundled config's name (--list_configs lists them)",
    )  # fmt: skip
    parser.add_argument("--data", type=str, help="corpus: a file, folder, glob, hf:NAME or builtin")
    parser.add_argument("--tokenizer", type=str, help="bytes | bpe:<vocab_size> | gpt2 | cl100k_base")
    parser.add_argument("--resume", type=str, default=None, help="continue a run (folder or last.ckpt)")
    parser.add_argument(
        "--init", type=Optional[str], default=None,
        help="start from pretrained weights: a checkpoint or run folder, a GPT-2 folder, or hf:REPO_ID",
    )  # fmt: skip
    parser.add_argument("--out_dir", type=str, default=None, help="run folder (unset: runs/<config>[-N])")
    parser.add_argument("--seed", type=int, default=1337, help="seeds weights, dropout and window order")
    parser.add_argument("--batch_size", type=int, help="windows per training batch (per device)")
    parser.add_argument("--val_fraction", type=float, default=0.1, help="share of --data held out for validation")
    parser.add_argument(
        "--val_data", type=Optional[str], default=None,
        help="a validation corpus (a --data spec)",
    )  # fmt: skip
    parser.add_argument("--val_windows", type=int, help="fixed validation windows evaluated each time")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--cache_dir", type=str, default=None, help="shard cache (unset: $MINIGPT_CACHE or ~/.cache/minigpt)")
    parser.add_argument(
        "--target_loss", type=Optional[float], default=None,
        help="stop at this val loss (nats/token)",
    )  # fmt: skip
    parser.add_argument(
        "--compile", type=Optional[bool], default=None,
        help="torch.compile the training step (unset: on CUDA GPUs only)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=Optional[int], default=None,
        help="CPU threads per process",
    )  # fmt: skip
    parser.add_argument("--samples", type=int, help="samples printed when training ends")
    parser.add_argument("--sample_tokens", type=int, help="length of each printed sample")
    parser.add_class_arguments(GPTConfig, "model", skip={"vocab_size"})
    parser.add_class_arguments(OptimConfig, "optim")
    if every_trainer_option:
        parser.add_class_arguments(Trainer, "trainer", skip=TRAINER_SKIP, instantiate=False)
    else:
        group = parser.add_argument_group("Lightning Trainer, the options used most (every one: --help_all)")
        lightning_defaults = inspect.signature(Trainer).parameters
        for name, text in COMMON_TRAINER.items():
            group.add_argument(f"--trainer.{name}", help=text, default=lightning_defaults[name].default)
    return parser


def bundled_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def list_configs() -> str:
    """One line per bundled config: its name and the first line of its header comment."""
    lines = []
    for name in bundled_configs():
        first = (CONFIGS / f"{name}.yaml").read_text().splitlines()[0]
        lines.append(f"{name:<18} {first.lstrip('#').strip()}")
    return "\n".join(lines)


def config_path(value: str) -> str:
    """The YAML file that `--config value` names: a file, else the bundled config of that name (so also
    `configs/shakespeare_cpu.yaml` from any folder, as the README writes it)."""
    if Path(value).is_file():
        return value
    name = Path(value).stem if value.endswith((".yaml", ".yml")) else value
    if name in bundled_configs() and Path(value).parent in (Path("."), Path("configs")):
        return str(CONFIGS / f"{name}.yaml")
    raise MiniGPTError(
        f"no config '{value}': give a YAML file or a bundled config by name ({', '.join(bundled_configs())})"
    )


def parse(argv: Sequence[str]) -> tuple[ArgumentParser, Namespace]:
    """Parse argv over the bundled defaults; --resume starts from the run's own config, and from then on
    names the checkpoint file it resolves to."""
    argv = canonical_options(argv)
    for flag, full in (("-h", False), ("--help", False), ("--help_all", True)):
        if flag in argv:
            build_parser(every_trainer_option=full).print_help()
            raise SystemExit(0)
    argv = _with_config_paths(argv)
    parser = build_parser()
    cfg = _parse_args(parser, argv)
    if cfg.resume:  # the same options again, over the resumed run's own config
        resume = _resume_path(cfg.resume)  # resolved once: the checkpoint file every later step uses
        cfg = _parse_args(parser, ["--config", _resumed_config(resume.parent / "config.yaml"), *argv])
        cfg.resume = str(resume)
    _validate(cfg)
    return parser, cfg


def _parse_args(parser: ArgumentParser, argv: list[str]) -> Namespace:
    try:
        return parser.parse_args(argv)
    except argparse.ArgumentError as exc:  # jsonargparse reports bad options and values this way
        raise MiniGPTError(" ".join(line.strip() for line in str(exc).splitlines() if line.strip())) from None


def _resumed_config(path: Path) -> str:
    """A run's config.yaml as YAML text, without the Trainer settings minigpt now sets itself (a run written
    by an older version may hold one, such as enable_autolog_hparams)."""
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise MiniGPTError(f"cannot resume: {path} is unreadable ({type(err).__name__}); restore the run's config.yaml") from None
    if not isinstance(config, dict):
        raise MiniGPTError(f"cannot resume: {path} is not a training config; restore the run's config.yaml")
    if isinstance(config.get("trainer"), dict):
        config["trainer"] = {k: v for k, v in config["trainer"].items() if k not in TRAINER_SKIP}
    return yaml.safe_dump(config, sort_keys=False)


def _with_config_paths(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = config_path(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + config_path(arg.split("=", 1)[1])
    return out


def _resume_path(path: str) -> Path:
    p = checkpoint.resolve(path)
    if not p.is_file():
        raise MiniGPTError(f"cannot resume: {p} not found; pass a run's last.ckpt (or its folder) to --resume")
    if not (p.parent / "config.yaml").is_file():
        raise MiniGPTError(f"cannot resume: no config.yaml beside {p}; resume only runs written by train.py")
    return p


MAX_SAMPLES = 100  # printed for a person at the end of training; more is a typo, not a wish
MAX_LAYERS = 1024  # deeper than any GPT trained so far; more is a typo that would take hours to build


def _validate(cfg: Namespace) -> None:
    """Every value checked before anything is written, in every process alike (only rank 0 reports): ranges
    here, the data's, model's and optimizer's own checks."""
    interval = cfg.trainer.val_check_interval
    checks = [
        (cfg.batch_size >= 1, f"--batch_size must be at least 1, got {cfg.batch_size}"),
        (cfg.val_windows >= 1, f"--val_windows must be at least 1, got {cfg.val_windows}"),
        (0 <= cfg.num_workers <= MAX_WORKERS, f"--num_workers must be from 0 to {MAX_WORKERS}, got {cfg.num_workers}"),
        (0 <= cfg.seed < 2**32, f"--seed must be in [0, 2**32), got {cfg.seed}"),
        (0 <= cfg.samples <= MAX_SAMPLES, f"--samples must be from 0 to {MAX_SAMPLES}, got {cfg.samples}"),
        (cfg.sample_tokens >= 1, f"--sample_tokens must be at least 1, got {cfg.sample_tokens}"),
        (cfg.threads is None or 1 <= cfg.threads <= MAX_THREADS, f"--threads must be from 1 to {MAX_THREADS}, got {cfg.threads}"),
        (cfg.target_loss is None or (math.isfinite(cfg.target_loss) and cfg.target_loss > 0),
         f"--target_loss must be a positive number of nats/token, got {cfg.target_loss}"),
        (cfg.model.n_layer <= MAX_LAYERS, f"--model.n_layer must be at most {MAX_LAYERS}, got {cfg.model.n_layer}"),
        (cfg.trainer.max_steps is not None and cfg.trainer.max_steps > 0, "set --trainer.max_steps to a positive number"),
        # Lightning itself would divide by these mid-fit, or (a negative clip) silently flip the gradients.
        (cfg.trainer.accumulate_grad_batches >= 1, "--trainer.accumulate_grad_batches must be at least 1"),
        (cfg.trainer.gradient_clip_val is None or cfg.trainer.gradient_clip_val >= 0,
         "--trainer.gradient_clip_val must be 0 or more"),
        # Training is one endless stream: a fraction of an epoch never comes. Times (DD:HH:MM:SS) go to Lightning.
        (not isinstance(interval, (int, float)) or (type(interval) is int and interval >= 1),
         f"--trainer.val_check_interval must be a whole number of steps (or a time, DD:HH:MM:SS), got {interval}"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise MiniGPTError(message)
    if cfg.val_data is None:
        check_val_fraction(cfg.val_fraction, "--val_fraction")
    for group, config in (("model", GPTConfig), ("optim", OptimConfig)):
        try:
            config(**vars(cfg[group]))
        except ValueError as err:
            raise MiniGPTError(f"--{group}.{err}") from None
    trainer = cfg.trainer
    check_devices(trainer.accelerator, trainer.strategy, trainer.devices)
    # The smallest vocabulary; checked again with the real one once it is known.
    check_fits_in_memory(GPTConfig(**vars(cfg.model), vocab_size=257), cfg.batch_size, trainer.accelerator)


def resolved_config(parser: ArgumentParser, cfg: Namespace) -> dict[str, Any]:
    """The full resolved config as plain data (what goes into config.yaml and every checkpoint)."""
    clean = cfg.clone()
    for key in ("config", "resume", "__default_config__"):
        clean.pop(key, None)
    return yaml.safe_load(parser.dump(clean, skip_validation=True))


def main(argv: Sequence[str]) -> None:
    if "--list_configs" in canonical_options(argv):
        print(list_configs())
        return
    rank_zero = launch.is_rank_zero()
    try:
        parser, cfg = parse(argv)
    except MiniGPTError:
        if rank_zero:
            raise
        raise ReportedByRankZero(USER_ERROR_EXIT) from None  # every process parses the same arguments
    from minigpt.training.finetune import pretrained_start
    from minigpt.training.run import train  # the data side and the Trainer: only once the arguments are known good

    try:
        given = given_options(argv)
        if "init" in given and cfg.resume:
            raise MiniGPTError("--init starts a new run and --resume continues one: use one of them")
        # --init fixes the model's shape and tokenizer, so the config is resolved once it is loaded.
        start = pretrained_start(cfg, given) if cfg.init and not cfg.resume else None
        train(cfg, resolved_config(parser, cfg), rank_zero=rank_zero, setup_process=configure_process, start=start)
    except BaseException:
        launch.wait_for_rank_zero()
        raise


def given_options(argv: Sequence[str]) -> set[str]:
    """The options named on the command line, without dashes: {"model.n_layer", "tokenizer", ...}."""
    return {arg[2:].split("=", 1)[0] for arg in canonical_options(argv) if arg.startswith("--")}


def configure_process(label: str | None) -> None:
    """What a worker process that ddp_spawn starts (without running this command) needs from it; `label` as in
    `minigpt.training.launch.process_label`."""
    from minigpt.training.run import quiet_lightning

    configure_logging(label)
    quiet_lightning()


if __name__ == "__main__":
    raise SystemExit(run(main))
