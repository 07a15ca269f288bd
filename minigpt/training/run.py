"""One training run, end to end: claim the run folder, prepare the data, assemble the Lightning Trainer (callbacks,
precision, checkpoint I/O), fit, and turn the ways training stops into what the user reads.

`train` is the entry point: the train command (`minigpt.cli.train`) builds a checked `TrainConfig` from its options
and calls it, and a Python caller can do the same (`train(TrainConfig.load(...))`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from minigpt import checkpoint, signals
from minigpt import tokenizer as tok
from minigpt.api import MiniGPT
from minigpt.data.shards import Prepared
from minigpt.errors import DISK_FULL, USER_ERROR_EXIT, DiskFull, Interrupted, MiniGPTError, ReportedByRankZero
from minigpt.model import GPTConfig
from minigpt.payload import Payload
from minigpt.training import launch
from minigpt.training.callbacks.checkpoints import (
    BestCheckpoint,
    LastCheckpoint,
    SafeCheckpointIO,
    StopAtStep,
    TargetLoss,
    ValidateLastStep,
)
from minigpt.training.callbacks.progress import ProgressLines, StepBar
from minigpt.training.callbacks.ranks import RankLost, RankWatch, stop_children
from minigpt.training.callbacks.record import RunRecord, TensorBoard, earlier_rows, replace_text
from minigpt.training.callbacks.views import AttentionLogger, ProcessSetup, SampleLogger
from minigpt.training.card import RunCard, model_card, print_samples
from minigpt.training.config import TrainConfig
from minigpt.training.datamodule import TokenDataModule, open_shard
from minigpt.training.finetune import cropped_weights, pretrained_start
from minigpt.training.machine import check_fits_in_memory, pick_precision, set_arithmetic, uses_cuda
from minigpt.training.module import Diverged, LitGPT
from minigpt.training.run_folder import InUse, RunFolder, holds_run

log = logging.getLogger(__name__)

# Lightning warnings that say nothing actionable for a minigpt run.
QUIET_WARNINGS = [
    r"Checkpoint directory .* exists and is not empty",  # config.yaml is written there first, on purpose
    r".*LeafSpec.*",
    r"The '(train|val)_dataloader' does not have many workers",
    r".*IterableDataset.*has `__len__` defined.*",
]


def train(config: TrainConfig, *, setup_process: Callable[[str | None], None] | None = None) -> Path | None:
    """Train as `config` says and return the run folder, the same run `minigpt train` makes with these options:
    with `config.init`, from that pretrained model (see `minigpt.training.finetune`). `setup_process(label)` is
    what every process that training starts runs first (see `minigpt.training.callbacks.views.ProcessSetup`);
    unset, it quiets Lightning and leaves logging as the caller set it (`logging.basicConfig(level=logging.INFO)`
    shows the progress lines the command prints).

    Every process of a distributed run calls this; global rank 0 alone claims the run folder, writes the
    config and prints, and the others learn the folder from it (see `minigpt.training.launch`): they return None.
    The process is left as it was found (`process_state_kept`): a notebook can train, then go on."""
    with process_state_kept():
        return _train(config, setup_process)


# Set while training, for the processes it starts: the run folder (`launch.share_run_folder`) and Lightning's seed.
TRAINING_ENVIRONMENT = (launch.RUN_ENV, "PL_GLOBAL_SEED", "PL_SEED_WORKERS")


@contextmanager
def process_state_kept() -> Iterator[None]:
    """Put back what training changes in the process for its own needs: the thread count (--threads) and float32
    matrix precision, the random generators (seeded by --seed), the warning filters and Lightning's loggers
    (`quiet_lightning`) and `TRAINING_ENVIRONMENT`. Left set, a later `minigpt train` started from a notebook took
    the notebook for its launcher, and its random numbers, thread count and warnings were the run's.

    Meanwhile TensorBoard's writer thread does not print its failure (a full disk) as a traceback: the writer
    raises it again in training's own thread at its next write, where `explained_stops` makes it one line."""
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    generators = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda_generators = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    environment = {name: os.environ.get(name) for name in TRAINING_ENVIRONMENT}
    loggers = {name: logging.getLogger(name) for name in LIGHTNING_LOGGERS}
    logger_states = {name: (lg.handlers[:], lg.filters[:], lg.propagate, lg.level) for name, lg in loggers.items()}
    thread_hook = threading.excepthook
    threading.excepthook = functools.partial(_raised_again_elsewhere, thread_hook)
    try:
        with warnings.catch_warnings():
            yield
    finally:
        threading.excepthook = thread_hook
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(precision)
        random.setstate(generators[0])
        np.random.set_state(generators[1])
        torch.random.set_rng_state(generators[2])
        if cuda_generators is not None:
            torch.cuda.set_rng_state_all(cuda_generators)
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for name, (handlers, filters, propagate, level) in logger_states.items():
            loggers[name].handlers[:], loggers[name].filters[:], loggers[name].propagate = handlers, filters, propagate
            loggers[name].setLevel(level)


def _raised_again_elsewhere(previous: Callable[[Any], None], args: Any) -> None:
    """`threading.excepthook` without the OSErrors of TensorBoard's writer thread (see `process_state_kept`)."""
    if type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError):
        return
    previous(args)


def _train(config: TrainConfig, setup_process: Callable[[str | None], None] | None) -> Path | None:
    started = time.monotonic()
    rank_zero, setup_process = launch.is_rank_zero(), setup_process or _quiet_process
    config.validate()  # again: a config made or changed in Python may not have been checked
    config, start = pretrained_start(config)  # --init fixes the model's shape and tokenizer
    # A resumed checkpoint is verified (checksum, plain data only) before anything else happens.
    resumed, resumed_payload = checkpoint.read(config.resume) if config.resume else (None, None)
    # The data is tokenized with the model's own tokenizer when there is one (a pretrained or resumed model).
    encoding = start.tokenizer if start else resumed_payload.tokenizer if resumed_payload else None
    quiet_lightning()
    accelerator = config.trainer.get("accelerator")
    set_arithmetic(config.threads, accelerator)

    with claim_run_folder(config) if rank_zero else nullcontext() as folder:
        run_dir = folder.path.resolve() if rank_zero else shared_run_folder(config)
        if rank_zero and config.resume:
            check_resumable(folder, Path(config.resume))
        L.seed_everything(config.seed, workers=True, verbose=False)
        data = TokenDataModule(
            config.data, config.tokenizer, config.model.block_size, config.batch_size,
            val_fraction=config.val_fraction, val_windows=config.val_windows, seed=config.seed,
            num_workers=config.num_workers, cache_dir=config.cache_dir, val_data=config.val_data,
            progress=rank_zero, encoding=encoding,
        )  # fmt: skip
        prepared = data.prepare()  # fails fast, with a one-line error, before the run folder gets a config
        check_fits_in_memory(config.model_config(prepared.tokenizer.n_vocab), config.batch_size, accelerator)
        trainer = build_trainer(config, run_dir, prepared, resumed, setup_process)  # Lightning checks its options
        if rank_zero:
            if not config.resume:
                try:
                    replace_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
                except OSError as err:
                    raise MiniGPTError(f"{_file_problem(err)}; nothing was saved") from None
            launch.share_run_folder(run_dir)
        with explained_stops(config, trainer, run_dir, rank_zero):
            with signals.deferred(escalate=not launch.external()):
                fit(config, trainer, data, prepared, start)
            if signals.received() is not None:  # it arrived during the last validation; the final save is made
                raise KeyboardInterrupt
    if not rank_zero:
        return None
    try:
        samples = print_samples(run_dir, config.samples, config.sample_tokens, config.seed)
        card = RunCard.of(run_dir, config, prepared, trainer, time.monotonic() - started)
        replace_text(run_dir / "README.md", model_card(card, samples))
    except OSError as err:
        raise MiniGPTError(f"the run is saved in {str(run_dir)!r}, but not its model card: {_file_problem(err)}") from None
    except KeyboardInterrupt:
        raise Interrupted(
            signals.received() or signal.SIGINT,
            f"the run is trained and saved, but not its samples and model card: minigpt train --resume {run_dir} writes them",
        ) from None
    return run_dir


def check_resumable(folder: RunFolder, resumed: Path) -> None:
    """What a resume would fail on only after training: a run file of the wrong kind, a metrics.csv that is not
    a run's, or a best.ckpt (the model the run ends by sampling) that is damaged."""
    folder.check_resumable()
    earlier_rows(folder.path / "metrics.csv", math.inf)
    best = folder.path / "best.ckpt"
    if best.is_file() and best.resolve() != resumed.resolve():
        try:
            checkpoint.read(best)
        except MiniGPTError:
            raise MiniGPTError(
                f"cannot resume: {str(best)!r} is damaged (it does not load, or fails its checksum): move it away "
                "(the run then keeps its best from here on), then resume again"
            ) from None


def claim_run_folder(config: TrainConfig) -> RunFolder:
    """The run folder, locked: the resumed run's, the one asked for (if it holds no run yet), or a fresh
    runs/<config name>[-N]. A folder that holds a run, that another process is using, or that has files of its
    own that a run would overwrite (`RunFolder.others`) is never used."""
    if config.resume:
        return RunFolder(Path(config.resume).parent.resolve()).acquire()
    if config.out_dir:
        folder = RunFolder(Path(config.out_dir)).acquire()
        if holds_run(folder.path):
            folder.release()
            raise MiniGPTError(
                f"{folder.path} already holds a trained run; continue it with --resume {folder.path} "
                "or choose another --out_dir"
            )
        if folder.others:
            folder.release()
            raise MiniGPTError(
                f"{folder.path} already has {', '.join(folder.others)}, which a run would overwrite; "
                "move them or choose another --out_dir"
            )
        folder.clear_leftovers()
        return folder
    name = Path(config.config).stem if config.config else "default"
    for n in itertools.count(1):
        path = Path("runs") / (name if n == 1 else f"{name}-{n}")
        if holds_run(path):
            continue
        try:
            folder = RunFolder(path).acquire()
        except InUse:
            continue
        if not holds_run(folder.path) and not folder.others:  # no run appeared between the check and the lock
            folder.clear_leftovers()
            return folder
        folder.release()
    raise AssertionError("unreachable")


def shared_run_folder(config: TrainConfig) -> Path | None:
    """The run folder as a process other than global rank 0 knows it: from rank 0 itself when Lightning's
    launcher started this process, else from --resume or --out_dir. None when only rank 0 knows it: such a
    process never writes to the folder, and Lightning shares rank 0's paths once training starts."""
    path = launch.shared_run_folder() or (Path(config.resume).parent if config.resume else config.out_dir)
    return Path(path).resolve() if path else None


def build_trainer(
    config: TrainConfig, run_dir: Path | None, prepared: Prepared, resumed: dict[str, Any] | None,
    setup_process: Callable[[str | None], None],
) -> L.Trainer:  # fmt: skip
    """The Trainer for `config`, writing checkpoints and logs to `run_dir` (and the whole config into
    TensorBoard's hparams) and running `setup_process` in every process; a `--trainer.*`
    value that Lightning rejects is a one-line error here, before anything is written.

    `run_dir` is None in a process that does not know the folder (see `shared_run_folder`): its paths then
    point into /dev/null, where any write would fail loudly, until Lightning hands it rank 0's at setup."""
    trainer_args = dict(config.trainer)  # the command offers none of the arguments set below
    interval, accumulate = trainer_args.get("val_check_interval"), trainer_args.get("accumulate_grad_batches") or 1
    if type(interval) is int:  # steps, as the option says; Lightning counts batches, `accumulate` to a step
        trainer_args["val_check_interval"] = interval * accumulate
    trainer_args["precision"] = pick_precision(trainer_args.get("precision"), trainer_args.get("accelerator"))
    if trainer_args.get("enable_progress_bar") is None:  # a bar on a terminal; in a log file, plain lines
        trainer_args["enable_progress_bar"] = sys.stderr.isatty()
    if trainer_args.get("enable_model_summary") is None:  # `fit` says the parameter count in one line instead
        trainer_args["enable_model_summary"] = False
    root = run_dir or Path(os.devnull)
    callbacks = [
        ProcessSetup(setup_process),
        RankWatch(),
        BestCheckpoint(str(root)),
        LastCheckpoint(str(root / "last.ckpt")),
        ValidateLastStep(),
        SampleLogger(prepared.tokenizer),
        AttentionLogger(prepared.tokenizer, probe_text(prepared, config.model.block_size)),
    ]
    if config.target_loss is not None:
        callbacks.append(TargetLoss(config.target_loss))
    every = trainer_args.get("log_every_n_steps") or 50
    callbacks.append(RunRecord(root, config.to_dict(), every))
    callbacks.append(ProgressLines(every, lines=not trainer_args["enable_progress_bar"]))
    if trainer_args["enable_progress_bar"]:
        callbacks.append(StepBar())
    preloaded = (config.resume, resumed) if resumed is not None else None
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


def fit(
    config: TrainConfig, trainer: L.Trainer, data: TokenDataModule, prepared: Prepared,
    start: MiniGPT | None = None,
) -> None:  # fmt: skip
    """Build the LightningModule for `config` and the prepared data (with `start`'s weights, if given), and train it."""
    meta, train_config = prepared.meta, config.to_dict()
    model_config = {**train_config["model"], "vocab_size": prepared.tokenizer.n_vocab}
    payload = Payload(GPTConfig(**model_config), prepared.tokenizer, train_config, meta)
    module = LitGPT(model_config, asdict(config.optim), meta.val.bytes_per_token, payload, config.seed)
    module.compile_loss = config.compile if config.compile is not None else uses_cuda(config.trainer.get("accelerator"))
    if start is not None:
        module.model.load_state_dict(cropped_weights(start.model.state_dict(), config.model.block_size))
        log.info("starting from the weights of %s", config.init)
    log.info("model: %.2fM parameters; run folder: %s", module.model.num_parameters() / 1e6, trainer.default_root_dir)
    trainer.fit(module, datamodule=data, ckpt_path=config.resume)


def probe_text(prepared: Prepared, block_size: int, tokens: int = 48, candidates: int = 8) -> str:
    """A fixed piece of validation text whose attention maps are logged at every validation: of `candidates`
    windows spread evenly over the validation shard, the one with the most distinct tokens, so that it is real
    text and not, say, a banner of asterisks at the top of a page (the first such window on a tie)."""
    val = open_shard(prepared.dir, "val", prepared.meta.dtype)
    length, eot = min(tokens, block_size), tok.eot_id(prepared.tokenizer)  # the model sees at most block_size
    starts = sorted({int(s) for s in np.linspace(0, max(0, len(val) - length - 1), candidates)})
    windows = [[t for t in val[s : s + length + 1].tolist() if t != eot][:length] for s in starts]
    return prepared.tokenizer.decode(max(windows, key=lambda w: len(set(w))))


@contextmanager
def explained_stops(config: TrainConfig, trainer: L.Trainer, run_dir: Path | None, rank_zero: bool) -> Iterator[None]:
    """Turn the ways training can stop early into what the user reads: a signal into `Interrupted` (saying
    what is saved and how to continue), a divergence or a setting Lightning rejects into a `MiniGPTError`.
    All processes of a distributed run stop alike for these reasons, so only global rank 0 explains."""
    try:
        yield
    except BaseException as err:
        explained = _explain(err, config, trainer, run_dir)
        if explained is None:
            raise
        if not rank_zero and not isinstance(explained, RankLost):  # a child whose rank 0 died says so itself
            code = signals.exit_code(explained.signum) if isinstance(explained, Interrupted) else USER_ERROR_EXIT
            raise ReportedByRankZero(code) from None
        raise explained from None


def _explain(err: BaseException, config: TrainConfig, trainer: L.Trainer, run_dir: Path | None) -> BaseException | None:
    """The user's view of `err` (see `explained_stops`), or None when it is a bug to show as it is."""
    if isinstance(err, MisconfigurationException):  # Lightning's word for a bad setting, found once fit started
        return MiniGPTError(f"Lightning cannot train with these settings: {_one_line(err)}")
    if isinstance(err, Diverged):
        kept = f"the last good checkpoint is kept in {run_dir}" if run_dir and holds_run(run_dir) else "nothing was saved"
        return MiniGPTError(f"{err}; {kept}; lower --optim.lr (now {config.optim.lr:g}) and train again")
    lost = next(c for c in trainer.callbacks if isinstance(c, RankWatch)).lost
    if lost:
        return RankLost(f"{lost}, so training stopped; {_kept(trainer, run_dir)}")
    signum = err.signum if isinstance(err, StopAtStep) else signals.received()  # the signal may be another rank's
    if signum is None:
        # The file system refused a write or a read: a full disk, a run's file made a folder or read-only meanwhile.
        if isinstance(err, DiskFull) or (isinstance(err, OSError) and err.errno is not None):
            stop_children(trainer)  # rank 0 alone writes files, and alone meets this
            return MiniGPTError(f"training stopped: {_file_problem(err)}; {_kept(trainer, run_dir)}")
        return None
    early = "" if run_dir and holds_run(run_dir) else " before its first checkpoint"
    return Interrupted(signum, f"training stopped{early}; {_kept(trainer, run_dir)}")


def _file_problem(err: OSError | DiskFull) -> str:
    if isinstance(err, DiskFull):
        return str(err)
    where = f" {os.fsdecode(err.filename)!r}" if err.filename else ""
    if err.errno in DISK_FULL:
        return f"no space left on the device{' while writing' + where if where else ''}: free some space"
    return f"cannot use{where} ({err.strerror or err})"


def _kept(trainer: L.Trainer, run_dir: Path | None) -> str:
    """What a run that stopped early leaves, and how to go on."""
    if not (run_dir and holds_run(run_dir)):
        return "nothing was saved"
    resumable = checkpoint.file_to_resume(run_dir)  # what --resume RUN would continue
    # Its last write in this run that completed (a second Ctrl-C may cut one short), else what the file holds.
    step = getattr(trainer.strategy.checkpoint_io, "written", {}).get(os.path.abspath(resumable))
    step = checkpoint.step_of(resumable) if step is None else step
    saved = f"step {step} is saved" if step is not None else "its checkpoints are kept"
    return f"{saved}: continue with minigpt train --resume {run_dir}"


def quiet_lightning() -> None:
    """Hide the Lightning warnings in `QUIET_WARNINGS` and the messages in `LIGHTNING_NOISE`, and send its
    messages through the command's own logging (one copy, its format, its level per rank). Every process of
    a run calls it (see `ProcessSetup`)."""
    for noise in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=noise)
    for name in LIGHTNING_TOP_LOGGERS:  # each may have a console handler of its own
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger(LIGHTNING_ADVERTS).addFilter(_not_an_advert)
    # "[rank: 0] Received SIGTERM: 15" before minigpt's own one line about the stop
    logging.getLogger(LIGHTNING_SIGNAL_NOTICES).setLevel(logging.WARNING)


LIGHTNING_TOP_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
LIGHTNING_ADVERTS = "lightning.pytorch.utilities.rank_zero"
LIGHTNING_SIGNAL_NOTICES = "lightning.pytorch.trainer.connectors.signal_connector"
LIGHTNING_LOGGERS = (*LIGHTNING_TOP_LOGGERS, LIGHTNING_ADVERTS, LIGHTNING_SIGNAL_NOTICES)
"""The loggers `quiet_lightning` changes (`process_state_kept` puts them back)."""


def _quiet_process(label: str | None) -> None:
    """`train`'s default `setup_process`: Lightning quieted in every process, logging left as it is."""
    quiet_lightning()


LIGHTNING_NOISE = ("💡", "GPU available", "TPU available", "HPU available", "`Trainer.fit` stopped", "Trainer.fit stopped")
"""Lightning messages that tell a minigpt user nothing: its adverts, which accelerators exist (the run's own
choice shows in its precision and speed), and that training stopped at --trainer.max_steps, as asked."""


def _not_an_advert(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(LIGHTNING_NOISE)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
