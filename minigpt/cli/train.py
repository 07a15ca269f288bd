"""`train.py`: YAML config + dotted overrides -> prepared shards -> Lightning fit -> checkpoints -> samples."""

from __future__ import annotations

import argparse
import inspect
import itertools
import math
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter, Namespace

from minigpt import checkpoint, launch, signals
from minigpt import tokenizer as tok
from minigpt.cli import USER_ERROR_EXIT, run
from minigpt.cli.common import canonical_options
from minigpt.errors import Interrupted, MiniGPTError, ReportedByRankZero
from minigpt.lit import OptimConfig
from minigpt.machine import MAX_WORKERS, check_devices, check_fits_in_memory
from minigpt.model import GPTConfig
from minigpt.prepare import MAX_VAL_FRACTION, MIN_VAL_FRACTION
from minigpt.rundir import InUse, RunFolder, holds_run

if TYPE_CHECKING:  # the real imports wait until after argument checks: they pull in Lightning
    import lightning as L

    from minigpt.data import TokenDataModule
    from minigpt.prepare import Prepared

log = logging.getLogger("minigpt.train")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
"""The bundled configs (package data); `default.yaml` holds every default a plain run uses."""
DEFAULT_CONFIG = CONFIGS / "default.yaml"
# Lightning warnings that say nothing actionable for a minigpt run.
QUIET_WARNINGS = [
    r"Checkpoint directory .* exists and is not empty",  # config.yaml is written there first, on purpose
    r".*LeafSpec.*",
    r"The '(train|val)_dataloader' does not have many workers",
    r".*IterableDataset.*has `__len__` defined.*",
]
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
    """Parse argv over the bundled defaults; --resume starts from the run's own config."""
    argv = canonical_options(argv)
    for flag, full in (("-h", False), ("--help", False), ("--help_all", True)):
        if flag in argv:
            build_parser(every_trainer_option=full).print_help()
            raise SystemExit(0)
    argv = _with_config_paths(argv)
    parser = build_parser()
    base: list[str] = []
    resume = _option_value(argv, "--resume")
    if resume is not None:
        base = ["--config", _resumed_config(_resume_path(resume).parent / "config.yaml")]
    try:
        cfg = parser.parse_args(base + argv)
    except argparse.ArgumentError as exc:  # jsonargparse reports bad options and values this way
        raise MiniGPTError(" ".join(line.strip() for line in str(exc).splitlines() if line.strip())) from None
    _validate(cfg)
    if cfg.resume:
        cfg.resume = str(_resume_path(cfg.resume))  # resolved once: the file every later step uses
    return parser, cfg


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


def _option_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


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
    """Every value checked before anything is written: ranges here, the model's and optimizer's own checks."""
    interval = cfg.trainer.val_check_interval
    checks = [
        (cfg.batch_size >= 1, f"--batch_size must be at least 1, got {cfg.batch_size}"),
        (MIN_VAL_FRACTION <= cfg.val_fraction <= MAX_VAL_FRACTION,
         f"--val_fraction must be from {MIN_VAL_FRACTION:g} to {MAX_VAL_FRACTION:g}, got {cfg.val_fraction}"),
        (cfg.val_windows >= 1, f"--val_windows must be at least 1, got {cfg.val_windows}"),
        (0 <= cfg.num_workers <= MAX_WORKERS, f"--num_workers must be from 0 to {MAX_WORKERS}, got {cfg.num_workers}"),
        (0 <= cfg.seed < 2**32, f"--seed must be in [0, 2**32), got {cfg.seed}"),
        (0 <= cfg.samples <= MAX_SAMPLES, f"--samples must be from 0 to {MAX_SAMPLES}, got {cfg.samples}"),
        (cfg.sample_tokens >= 1, f"--sample_tokens must be at least 1, got {cfg.sample_tokens}"),
        (cfg.threads is None or cfg.threads >= 1, f"--threads must be at least 1, got {cfg.threads}"),
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
    for group, config in (("model", GPTConfig), ("optim", OptimConfig)):
        try:
            config(**vars(cfg[group]))
        except ValueError as err:
            raise MiniGPTError(f"--{group}.{err}") from None
    trainer = cfg.trainer
    check_devices(trainer.accelerator, trainer.strategy, trainer.devices)
    # The smallest vocabulary; checked again with the real one once it is known.
    check_fits_in_memory(GPTConfig(**vars(cfg.model), vocab_size=257), cfg.batch_size, trainer.accelerator)


def claim_run_folder(cfg: Namespace) -> RunFolder:
    """The run folder, locked: the resumed run's, the one asked for (if it holds no run yet), or a fresh
    runs/<config name>[-N]. A folder that holds a run, or that another process is using, is never reused."""
    if cfg.resume:
        return RunFolder(Path(cfg.resume).parent.resolve()).acquire()
    if cfg.out_dir:
        folder = RunFolder(Path(cfg.out_dir)).acquire()
        if holds_run(folder.path):
            folder.release()
            raise MiniGPTError(
                f"{folder.path} already holds a trained run; continue it with --resume {folder.path} "
                "or choose another --out_dir"
            )
        folder.clear_leftovers()
        return folder
    name = Path(str(cfg.config[-1])).stem if cfg.get("config") else "default"
    for n in itertools.count(1):
        path = Path("runs") / (name if n == 1 else f"{name}-{n}")
        if holds_run(path):
            continue
        try:
            folder = RunFolder(path).acquire()
        except InUse:
            continue
        if not holds_run(folder.path):  # no run appeared between the check and the lock
            folder.clear_leftovers()
            return folder
        folder.release()
    raise AssertionError("unreachable")


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
    try:
        train(parser, cfg, rank_zero, given_options(argv))
    except BaseException:
        launch.wait_for_rank_zero()
        raise


def given_options(argv: Sequence[str]) -> set[str]:
    """The options named on the command line, without dashes: {"model.n_layer", "tokenizer", ...}."""
    return {arg[2:].split("=", 1)[0] for arg in canonical_options(argv) if arg.startswith("--")}


def train(parser: ArgumentParser, cfg: Namespace, rank_zero: bool, given: set[str] = frozenset()) -> None:
    """Train as `cfg` says. Every process of a distributed run calls this; global rank 0 alone claims the run
    folder, writes the config and prints, and the others learn the folder from it (see `minigpt.launch`).
    `given` names the options on the command line, which a pretrained start (--init) must not contradict."""
    started = time.monotonic()
    # A resumed checkpoint is verified (checksum, plain data only) before anything else happens.
    resumed = checkpoint.read(cfg.resume) if cfg.resume else None
    if "init" in given and cfg.resume:
        raise MiniGPTError("--init starts a new run and --resume continues one: use one of them")
    start = pretrained_start(cfg, given) if cfg.init and not cfg.resume else None
    # The data is tokenized with the model's own tokenizer when there is one (a pretrained or resumed model).
    encoding = start.tokenizer if start else tok.from_dict(resumed[checkpoint.PAYLOAD_KEY]["tokenizer"]) if resumed else None
    # Heavy imports only once the arguments are known to be good.
    import lightning as L

    from minigpt.machine import set_arithmetic

    quiet_lightning()
    set_arithmetic(cfg.threads, cfg.trainer.accelerator)
    from minigpt.data import TokenDataModule

    with claim_run_folder(cfg) if rank_zero else nullcontext() as folder:
        run_dir = folder.path.resolve() if rank_zero else shared_run_folder(cfg)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        data = TokenDataModule(
            cfg.data, cfg.tokenizer, cfg.model.block_size, cfg.batch_size, cfg.val_fraction,
            cfg.val_windows, cfg.seed, cfg.num_workers, cfg.cache_dir, progress=rank_zero, val_data=cfg.val_data,
            encoding=encoding,
        )  # fmt: skip
        prepared = data.prepare()  # fails fast, with a one-line error, before the run folder gets a config
        model = GPTConfig(**vars(cfg.model), vocab_size=prepared.tokenizer.n_vocab)
        check_fits_in_memory(model, cfg.batch_size, cfg.trainer.accelerator)
        train_config = resolved_config(parser, cfg)
        trainer = build_trainer(cfg, run_dir, prepared, resumed, train_config)  # Lightning checks its options
        if rank_zero:
            if not cfg.resume:
                (run_dir / "config.yaml").write_text(yaml.safe_dump(train_config, sort_keys=False))
            launch.share_run_folder(run_dir)
        with explained_stops(cfg, trainer, run_dir, rank_zero):
            with signals.deferred(escalate=not launch.external()):
                fit(cfg, trainer, data, prepared, train_config, start)
            if signals.received() is not None:  # it arrived during the last validation; the final save is made
                raise KeyboardInterrupt
    if rank_zero:
        samples = print_samples(run_dir, cfg.samples, cfg.sample_tokens, cfg.seed)
        write_model_card(run_dir, cfg, prepared, trainer, time.monotonic() - started, samples)


def quiet_lightning() -> None:
    """Hide the Lightning warnings in `QUIET_WARNINGS` and its advertisements ("💡 Tip: try ..."), and send its
    messages through the command's own logging (one copy, its format, its level per rank). Every process of
    a run calls it (see `ProcessSetup`)."""
    for noise in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=noise)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # each may have a console handler of its own
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_an_advert)


def _not_an_advert(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(("💡", "TPU available", "HPU available"))


def shared_run_folder(cfg: Namespace) -> Path | None:
    """The run folder as a process other than global rank 0 knows it: from rank 0 itself when Lightning's
    launcher started this process, else from --resume or --out_dir. None when only rank 0 knows it: such a
    process never writes to the folder, and Lightning shares rank 0's paths once training starts."""
    path = launch.shared_run_folder() or (Path(cfg.resume).parent if cfg.resume else cfg.out_dir)
    return Path(path).resolve() if path else None


@contextmanager
def explained_stops(cfg: Namespace, trainer: L.Trainer, run_dir: Path | None, rank_zero: bool) -> Iterator[None]:
    """Turn the ways training can stop early into what the user reads: a signal into `Interrupted` (saying
    what is saved and how to continue), a divergence or a setting Lightning rejects into a `MiniGPTError`.
    All processes of a distributed run stop alike for these reasons, so only global rank 0 explains."""
    try:
        yield
    except BaseException as err:
        explained = _explain(err, cfg, trainer, run_dir)
        if explained is None:
            raise
        if not rank_zero:
            code = signals.exit_code(explained.signum) if isinstance(explained, Interrupted) else USER_ERROR_EXIT
            raise ReportedByRankZero(code) from None
        raise explained from None


def _explain(err: BaseException, cfg: Namespace, trainer: L.Trainer, run_dir: Path | None) -> Exception | None:
    """The user's view of `err` (see `explained_stops`), or None when it is a bug to show as it is."""
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from minigpt.checkpointing import LastCheckpoint
    from minigpt.lit import Diverged

    if isinstance(err, MisconfigurationException):  # Lightning's word for a bad setting, found once fit started
        return MiniGPTError(f"Lightning cannot train with these settings: {_one_line(err)}")
    if isinstance(err, Diverged):
        kept = f"the last good checkpoint is kept in {run_dir}" if run_dir and holds_run(run_dir) else "nothing was saved"
        return MiniGPTError(f"{err}; {kept}; lower --optim.lr (now {cfg.optim.lr:g}) and train again")
    signum = err.signum if isinstance(err, Interrupted) else signals.received()  # the signal may be another rank's
    if signum is None:
        return None
    if not (run_dir and holds_run(run_dir)):
        return Interrupted(signum, "training stopped before its first checkpoint; nothing was saved")
    saved = next(c for c in trainer.callbacks if isinstance(c, LastCheckpoint)).saved_step
    return Interrupted(
        signum, f"training stopped; step {saved} is saved: continue with minigpt train --resume {run_dir}"
    )


def build_trainer(
    cfg: Namespace, run_dir: Path | None, prepared: Prepared, resumed: dict[str, Any] | None, train_config: dict[str, Any]
) -> L.Trainer:
    """The Trainer for `cfg`, writing checkpoints and logs to `run_dir` (and `train_config` into TensorBoard's
    hparams); a `--trainer.*` value that Lightning rejects is a one-line error here, before anything is written.

    `run_dir` is None in a process that does not know the folder (see `shared_run_folder`): its paths then
    point into /dev/null, where any write would fail loudly, until Lightning hands it rank 0's at setup."""
    import lightning as L
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from minigpt.callbacks import AttentionLogger, ProcessSetup, SampleLogger
    from minigpt.checkpointing import BestCheckpoint, LastCheckpoint, SafeCheckpointIO, TargetLoss
    from minigpt.machine import pick_precision
    from minigpt.progress import ProgressLines
    from minigpt.runcard import RunRecord, TensorBoard

    trainer_args = {k: v for k, v in vars(cfg.trainer).items() if k not in TRAINER_SKIP}
    trainer_args["precision"] = pick_precision(trainer_args.get("precision"), trainer_args.get("accelerator"))
    if trainer_args.get("enable_progress_bar") is None:  # a bar on a terminal; in a log file, plain lines
        trainer_args["enable_progress_bar"] = sys.stderr.isatty()
    root = run_dir or Path(os.devnull)
    callbacks = [
        ProcessSetup(configure_process),
        BestCheckpoint(str(root)),
        LastCheckpoint(str(root / "last.ckpt")),
        SampleLogger(prepared.tokenizer),
        AttentionLogger(prepared.tokenizer, probe_text(prepared, cfg.model.block_size)),
    ]
    if cfg.target_loss is not None:
        callbacks.append(TargetLoss(cfg.target_loss))
    every = trainer_args.get("log_every_n_steps") or 50
    callbacks.append(RunRecord(root, train_config, every))
    callbacks.append(ProgressLines(every, lines=not trainer_args["enable_progress_bar"]))
    preloaded = (cfg.resume, resumed) if resumed is not None else None
    try:
        return L.Trainer(
            **trainer_args,
            default_root_dir=root,
            logger=TensorBoard(save_dir=root, name="tb", version="", default_hp_metric=False),
            enable_autolog_hparams=False,  # RunRecord logs the whole config, with the final metrics
            callbacks=callbacks,
            plugins=[SafeCheckpointIO(preloaded)],
        )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as err:
        raise MiniGPTError(f"a --trainer option is not usable here: {_one_line(err)}") from None


def configure_process(label: str | None) -> None:
    """What a worker process that ddp_spawn starts (without running this command) needs from it; `label` as in
    `minigpt.launch.process_label`."""
    from minigpt.cli import configure_logging

    configure_logging(label)
    quiet_lightning()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def fit(
    cfg: Namespace, trainer: L.Trainer, data: TokenDataModule, prepared: Prepared, train_config: dict[str, Any],
    start: checkpoint.Loaded | None = None,
) -> None:  # fmt: skip
    """Build the LightningModule for `cfg` and the prepared data (with `start`'s weights, if given), and train it."""
    from minigpt.lit import LitGPT
    from minigpt.machine import uses_cuda
    from minigpt.payload import checkpoint_payload

    meta = prepared.meta
    model_config = {**train_config["model"], "vocab_size": prepared.tokenizer.n_vocab}
    payload = checkpoint_payload(GPTConfig(**model_config), prepared.tokenizer, train_config, meta)
    module = LitGPT(model_config, asdict(OptimConfig(**vars(cfg.optim))), meta.val.bytes_per_token, payload, cfg.seed)
    module.compile_loss = cfg.compile if cfg.compile is not None else uses_cuda(cfg.trainer.accelerator)
    if start is not None:
        module.model.load_state_dict(cropped_weights(start.model.state_dict(), cfg.model.block_size))
        log.info("starting from the weights of %s", cfg.init)
    log.info("model: %.2fM parameters; run folder: %s", module.model.num_parameters() / 1e6, trainer.default_root_dir)
    trainer.fit(module, datamodule=data, ckpt_path=cfg.resume)


SHAPE = ("n_layer", "n_head", "n_embd", "bias", "activation")  # what a pretrained start fixes


def pretrained_start(cfg: Namespace, given: set[str]) -> checkpoint.Loaded:
    """Load --init's model and make `cfg` take its shape and tokenizer, refusing options that contradict them.
    The context (--model.block_size) may be shorter than the source's: its position table is cropped."""
    from minigpt import sources

    start = sources.load(cfg.init)
    source = start.model.config
    for field in SHAPE:
        ours, theirs = getattr(cfg.model, field), getattr(source, field)
        if f"model.{field}" in given and ours != theirs:
            raise MiniGPTError(
                f"--model.{field} {ours} contradicts --init {cfg.init}, whose model has {field} {theirs}: "
                "leave it out (the shape comes from --init)"
            )
        setattr(cfg.model, field, theirs)
    if cfg.model.block_size > source.block_size and "model.block_size" not in given:
        cfg.model.block_size = source.block_size  # a default or a config's context: the source's, if shorter
    if cfg.model.block_size > source.block_size:
        raise MiniGPTError(
            f"--model.block_size {cfg.model.block_size} is longer than the {source.block_size} positions of "
            f"--init {cfg.init}: use at most {source.block_size}"
        )
    if "tokenizer" in given:
        raise MiniGPTError(f"--tokenizer does not combine with --init: the tokenizer of {cfg.init} comes with it")
    # Names the encoding in config.yaml and in the shard cache's key; the digest keeps another model saved at
    # the same path later (with another tokenizer) from reusing these shards.
    cfg.tokenizer = f"from:{cfg.init}#{tok.digest(start.tokenizer)}"
    return start


def cropped_weights(state: dict[str, Any], block_size: int) -> dict[str, Any]:
    """`state` with its position table cut to the first `block_size` positions."""
    return {k: v[:block_size] if k == "transformer.wpe.weight" else v for k, v in state.items()}


def probe_text(prepared: Prepared, block_size: int, tokens: int = 48) -> str:
    """A fixed piece of validation text whose attention maps are logged at every validation."""
    from minigpt.data import open_shard

    val = open_shard(prepared.dir, "val", prepared.meta.dtype)[: min(tokens, block_size) + 1].tolist()
    return prepared.tokenizer.decode([t for t in val if t != tok.eot_id(prepared.tokenizer)])


def print_samples(run_dir: Path, count: int, tokens: int, seed: int) -> list[str]:
    """Print `count` completions from the run's best checkpoint, the way `minigpt generate` would; return them."""
    from minigpt.sample import SamplingSettings, generate

    if count < 1:
        return []
    path = best_checkpoint(run_dir)
    loaded = checkpoint.load(path)
    texts = generate(loaded.model, loaded.tokenizer, "", SamplingSettings(max_new_tokens=tokens, num_samples=count, seed=seed))
    for i, text in enumerate(texts):
        print(f"--- sample {i + 1} ---\n{text}")
    print(f"--- sample more with: minigpt generate --ckpt {path} --prompt '...'")
    return list(texts)


def best_checkpoint(run_dir: Path) -> Path:
    return run_dir / "best.ckpt" if (run_dir / "best.ckpt").exists() else run_dir / "last.ckpt"


def write_model_card(run_dir: Path, cfg: Namespace, prepared: Prepared, trainer: L.Trainer, seconds: float, samples: list[str]) -> None:
    """The run folder's README.md (see `minigpt.runcard.model_card`): this run's facts and its best validation."""
    from minigpt.checkpointing import BestCheckpoint
    from minigpt.progress import duration
    from minigpt.runcard import model_card

    score = next(c for c in trainer.callbacks if isinstance(c, BestCheckpoint)).best_model_score
    val_loss = float(score) if score is not None else float("nan")
    meta, model = prepared.meta, cfg.model
    facts = {
        "name": run_dir.name, "folder": run_dir, "data": cfg.data, "tokenizer": cfg.tokenizer,
        "vocab_size": prepared.tokenizer.n_vocab, "train_tokens": meta.train.tokens, "val_tokens": meta.val.tokens,
        "params": GPTConfig(**vars(model), vocab_size=prepared.tokenizer.n_vocab).num_parameters(),
        "n_layer": model.n_layer, "n_head": model.n_head, "n_embd": model.n_embd, "block_size": model.block_size,
        "steps": trainer.global_step, "batch_size": cfg.batch_size, "devices": trainer.world_size,
        "val_loss": val_loss, "val_bpb": val_loss / meta.val.bytes_per_token / math.log(2),
        "wall_time": duration(seconds),
    }  # fmt: skip
    (run_dir / "README.md").write_text(model_card(facts, samples))


if __name__ == "__main__":
    raise SystemExit(run(main))
