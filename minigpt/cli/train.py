"""`train.py`: YAML config + dotted overrides -> prepared shards -> Lightning fit -> checkpoints -> samples."""

from __future__ import annotations

import logging
import signal
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from minigpt import checkpoint
from minigpt import tokenizer as tok
from minigpt.errors import MiniGPTError
from minigpt.lit import OptimConfig
from minigpt.model import GPTConfig

if TYPE_CHECKING:  # the real imports wait until after argument checks: they pull in Lightning
    from minigpt.data import TokenDataModule
    from minigpt.prepare import Prepared

log = logging.getLogger("minigpt.train")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"
# Set by minigpt itself (run folder, logger, checkpointing); not offered as --trainer.* options.
# Lightning warnings that say nothing actionable for a minigpt run.
QUIET_WARNINGS = [
    r"Checkpoint directory .* exists and is not empty",  # config.yaml is written there first, on purpose
    r".*LeafSpec.*",
    r"The '(train|val)_dataloader' does not have many workers",
    r".*IterableDataset.*has `__len__` defined.*",
]
TRAINER_SKIP = {"logger", "callbacks", "plugins", "default_root_dir", "enable_checkpointing"}


def build_parser() -> ArgumentParser:
    """The full command line: every option has a dotted name and can also be set in a YAML config."""
    from lightning import Trainer  # deferred: building the parser is all `--help` needs of Lightning

    parser = ArgumentParser(prog="train.py", description="Train a GPT with PyTorch Lightning.", exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--data", type=str, default="pydoc", help="corpus: a file, folder, glob, hf:NAME or builtin")
    parser.add_argument("--tokenizer", type=str, default="bytes", help="bytes | bpe:<vocab_size> | gpt2 | cl100k_base")
    parser.add_argument("--resume", type=str, default=None, help="continue a run from its last.ckpt (file or run folder)")
    parser.add_argument("--out_dir", type=str, default=None, help="run folder (default: runs/<config name>[-N])")
    parser.add_argument("--seed", type=int, default=1337, help="seeds weights, dropout and the window order")
    parser.add_argument("--batch_size", type=int, default=32, help="windows per training batch (per device)")
    parser.add_argument("--val_fraction", type=float, default=0.1, help="share of the corpus held out for validation")
    parser.add_argument("--val_windows", type=int, default=256, help="fixed validation windows evaluated each time")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--cache_dir", type=str, default=None, help="shard cache (default: $MINIGPT_CACHE or ~/.cache/minigpt)")
    parser.add_argument("--samples", type=int, default=2, help="samples printed when training ends")
    parser.add_argument("--sample_tokens", type=int, default=200, help="length of each printed sample")
    parser.add_class_arguments(GPTConfig, "model", skip={"vocab_size"})
    parser.add_class_arguments(OptimConfig, "optim")
    parser.add_class_arguments(Trainer, "trainer", skip=TRAINER_SKIP, instantiate=False)
    return parser


def parse(argv: Sequence[str]) -> tuple[ArgumentParser, Namespace]:
    """Parse argv; without --config the default config applies, and --resume starts from the run's own config."""
    argv = list(argv)
    parser = build_parser()
    base: list[str] = []
    resume = _option_value(argv, "--resume")
    if resume is not None:
        base = ["--config", str(_resume_path(resume).parent / "config.yaml")]
    elif _option_value(argv, "--config") is None and "--help" not in argv and "-h" not in argv:
        base = ["--config", str(DEFAULT_CONFIG)]
    try:
        cfg = parser.parse_args(base + argv)
    except Exception as exc:  # jsonargparse reports bad options and values as exceptions
        raise MiniGPTError(str(exc).strip().splitlines()[0]) from None
    _validate(cfg)
    return parser, cfg


def _option_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _resume_path(path: str) -> Path:
    p = Path(path)
    p = p / "last.ckpt" if p.is_dir() else p
    if not p.is_file():
        raise MiniGPTError(f"cannot resume: {p} not found; pass a run's last.ckpt (or its folder) to --resume")
    if not (p.parent / "config.yaml").is_file():
        raise MiniGPTError(f"cannot resume: no config.yaml beside {p}; resume only runs written by train.py")
    return p


def _validate(cfg: Namespace) -> None:
    checks = [
        (cfg.batch_size >= 1, "--batch_size must be at least 1"),
        (0 < cfg.val_fraction < 1, "--val_fraction must be between 0 and 1"),
        (cfg.val_windows >= 1, "--val_windows must be at least 1"),
        (cfg.model.n_embd % cfg.model.n_head == 0, "--model.n_embd must be divisible by --model.n_head"),
        (min(cfg.model.n_layer, cfg.model.n_head, cfg.model.block_size) >= 1, "model sizes must be at least 1"),
        (0 <= cfg.model.dropout < 1, "--model.dropout must be in [0, 1)"),
        (cfg.trainer.max_steps is not None and cfg.trainer.max_steps > 0, "set --trainer.max_steps to a positive number"),
    ]
    for ok, message in checks:
        if not ok:
            raise MiniGPTError(message)


def choose_run_dir(cfg: Namespace) -> Path:
    """The run folder: the resumed run's, the one asked for (if it holds no run yet), or a fresh runs/<name>[-N]."""
    if cfg.resume:
        return _resume_path(cfg.resume).parent
    if cfg.out_dir:
        run_dir = Path(cfg.out_dir)
        if _holds_run(run_dir):
            raise MiniGPTError(
                f"{run_dir} already holds a trained run; continue it with --resume {run_dir / 'last.ckpt'} "
                "or choose another --out_dir"
            )
        return run_dir
    name = Path(str(cfg.config[-1])).stem if cfg.get("config") else "default"
    run_dir, n = Path("runs") / name, 1
    while _holds_run(run_dir):
        n += 1
        run_dir = Path("runs") / f"{name}-{n}"
    return run_dir


def _holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("last.ckpt", "best.ckpt", "config.yaml"))


def resolved_config(parser: ArgumentParser, cfg: Namespace) -> dict[str, Any]:
    """The full resolved config as plain data (what goes into config.yaml and every checkpoint)."""
    clean = cfg.clone()
    for key in ("config", "resume"):
        clean.pop(key, None)
    return yaml.safe_load(parser.dump(clean, skip_validation=True))


def pick_precision(requested: str | None, accelerator: str | None) -> str:
    """bf16 mixed precision on GPUs that support it, full fp32 elsewhere, unless the user chose."""
    import torch

    if requested is not None:
        return str(requested)
    on_gpu = str(accelerator) in ("auto", "gpu", "cuda", "None") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def main(argv: Sequence[str]) -> None:
    parser, cfg = parse(argv)
    run_dir = choose_run_dir(cfg)
    # Heavy imports only once the arguments are known to be good.
    import lightning as L

    for noise in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=noise)

    from minigpt.data import TokenDataModule

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = TokenDataModule(
        cfg.data, cfg.tokenizer, cfg.model.block_size, cfg.batch_size, cfg.val_fraction,
        cfg.val_windows, cfg.seed, cfg.num_workers, cfg.cache_dir,
    )  # fmt: skip
    prepared = data.prepare()  # fails fast, with a one-line error, before any run folder is written
    train_config = resolved_config(parser, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(train_config, sort_keys=False))
    fit(cfg, data, prepared, train_config, run_dir)
    print_samples(run_dir, cfg.samples, cfg.sample_tokens, cfg.seed)


def fit(cfg: Namespace, data: TokenDataModule, prepared: Prepared, train_config: dict[str, Any], run_dir: Path) -> None:
    """Build the LightningModule and Trainer for `cfg` and train, writing checkpoints and logs to `run_dir`."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from minigpt.callbacks import AttentionLogger, SampleLogger
    from minigpt.lit import AtomicCheckpointIO, LastCheckpoint, LitGPT

    meta = prepared.meta
    model_config = {**train_config["model"], "vocab_size": prepared.tokenizer.n_vocab}
    payload = checkpoint.make_payload(GPTConfig(**model_config), prepared.tokenizer, train_config, meta)
    module = LitGPT(model_config, asdict(OptimConfig(**vars(cfg.optim))), meta["val_bytes"] / meta["val_tokens"], payload)
    log.info("model: %.2fM parameters; run folder: %s", module.model.num_parameters() / 1e6, run_dir)
    trainer_args = {k: v for k, v in vars(cfg.trainer).items() if k not in TRAINER_SKIP}
    trainer_args["precision"] = pick_precision(trainer_args.get("precision"), trainer_args.get("accelerator"))
    callbacks = [
        ModelCheckpoint(dirpath=run_dir, filename="best", monitor="val/loss", save_last=True, auto_insert_metric_name=False),
        LastCheckpoint(str(run_dir / "last.ckpt")),
        SampleLogger(prepared.tokenizer),
        AttentionLogger(prepared.tokenizer, probe_text(prepared, cfg.model.block_size)),
    ]
    trainer = L.Trainer(
        **trainer_args,
        default_root_dir=run_dir,
        logger=TensorBoardLogger(save_dir=run_dir, name="tb", version=""),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
    )
    # SIGTERM (a scheduler ending the job) takes the same path as Ctrl-C: save last.ckpt, then stop.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    trainer.fit(module, datamodule=data, ckpt_path=str(_resume_path(cfg.resume)) if cfg.resume else None)


def probe_text(prepared: Prepared, block_size: int, tokens: int = 48) -> str:
    """A fixed piece of validation text whose attention maps are logged at every validation."""
    from minigpt.data import open_shard

    val = open_shard(prepared.dir, "val", prepared.meta["dtype"])[: min(tokens, block_size) + 1].tolist()
    return prepared.tokenizer.decode([t for t in val if t != tok.eot_id(prepared.tokenizer)])


def print_samples(run_dir: Path, count: int, tokens: int, seed: int) -> None:
    """Print `count` completions from the run's best checkpoint, the way generate.py would."""
    from minigpt.sample import generate

    if count < 1:
        return
    path = run_dir / "best.ckpt" if (run_dir / "best.ckpt").exists() else run_dir / "last.ckpt"
    loaded = checkpoint.load(path)
    for i, text in enumerate(generate(loaded.model, loaded.tokenizer, "", max_new_tokens=tokens, num_samples=count, seed=seed)):
        print(f"--- sample {i + 1} ---\n{text}")
    print(f"--- sample more with: python generate.py --ckpt {path} --prompt '...'")
