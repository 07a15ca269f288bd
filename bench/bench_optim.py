"""AdamW against Muon (--optim.name), and cosine against warmup-stable-decay (--optim.schedule), on a shipped recipe.

Each variant is the real training run (`minigpt.training.run.train`, as `minigpt train --config CONFIG` trains)
with some --optim settings changed; the variants alternate, round after round, in this one process, from the
same seed (the same initial weights and the same batches). Every run trains all --steps with no early stop, so
that one run gives both figures: the first validation at or below --target (its step, and the wall time from
the start of the run to it), and the last validation's loss. Steps are the main figure; wall times on a shared
machine are noisy, and their ratios are only fair between runs of the same round.

Usage: python bench/bench_optim.py [--config shakespeare_cpu] [--data FILE] [--target 1.89] [--rounds 2]
       [--steps N] [--every N] [--threads N] [--variant LABEL:key=value,key=value ...]
A variant's keys are --optim fields (`muon:name=muon,muon_lr=0.04`); without --variant: adamw and muon, each
with the cosine and the wsd schedule. Preparing the data is done once, before the first round.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from minigpt.training.config import TrainConfig
from minigpt.training.run import train

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
DEFAULT_VARIANTS = [
    "adamw:name=adamw",
    "muon:name=muon",
    "adamw+wsd:name=adamw,schedule=wsd",
    "muon+wsd:name=muon,schedule=wsd",
]
VALIDATION = re.compile(r"step (\d+): val loss ([\d.]+) nats/token")


class Validations(logging.Handler):
    """Collects (step, val loss, seconds since `start`) from the module's "step N: val loss X" lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.start = time.perf_counter()
        self.points: list[tuple[int, float, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = VALIDATION.match(record.getMessage())
        if match:
            self.points.append((int(match[1]), float(match[2]), time.perf_counter() - self.start))


@dataclass
class Result:
    steps_to_target: list[int | None] = field(default_factory=list)
    seconds_to_target: list[float | None] = field(default_factory=list)
    final_loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def parse_variant(text: str) -> tuple[str, dict]:
    """'label:key=value,...' -> (label, {key: value}), the values read as YAML (numbers stay numbers)."""
    label, _, settings = text.partition(":")
    pairs = (item.split("=", 1) for item in settings.split(",") if item)
    return label, {key: yaml.safe_load(value) for key, value in pairs}


def run_once(args: argparse.Namespace, folder: Path, optim: dict, steps: int) -> Validations:
    """One training run of `steps` steps with these --optim settings; its validations, timed."""
    trainer = {"max_steps": steps, "enable_progress_bar": False, "enable_model_summary": False}
    if args.every:
        trainer["val_check_interval"] = args.every
    config = TrainConfig.load(
        args.config, data=str(args.data), cache_dir=str(folder / "cache"), out_dir=str(folder / f"run{time.time_ns()}"),
        target_loss=None, samples=0, threads=args.threads, optim=optim, trainer=trainer,
    )  # fmt: skip
    handler = Validations()
    logger = logging.getLogger("minigpt.training.module")
    logger.addHandler(handler)
    try:
        train(config)
    finally:
        logger.removeHandler(handler)
    return handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="shakespeare_cpu")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--target", type=float, default=1.89, help="validation loss to reach, nats/token")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, help="steps per run (unset: the config's max_steps)")
    parser.add_argument("--every", type=int, help="steps between validations (unset: the config's)")
    parser.add_argument("--threads", type=int, help="CPU threads (unset: the command's default; 1 on a busy machine)")
    parser.add_argument("--variant", action="append", help="LABEL:key=value,... of --optim settings")
    args = parser.parse_args()
    logging.getLogger("minigpt").setLevel(logging.INFO)
    variants = dict(parse_variant(v) for v in args.variant or DEFAULT_VARIANTS)
    steps = args.steps or TrainConfig.load(args.config, data=str(args.data)).trainer["max_steps"]
    results = {label: Result() for label in variants}
    with tempfile.TemporaryDirectory() as tmp:
        run_once(args, Path(tmp), {}, 1)  # prepares the shards once, outside every timed run
        for round_ in range(1, args.rounds + 1):
            for label, optim in variants.items():
                points = run_once(args, Path(tmp), optim, steps).points
                hit = next(((step, seconds) for step, loss, seconds in points if loss <= args.target), (None, None))
                result = results[label]
                result.steps_to_target.append(hit[0])
                result.seconds_to_target.append(hit[1])
                result.final_loss.append(points[-1][1])
                result.seconds.append(points[-1][2])
                curve = " ".join(f"{step}:{loss:.3f}" for step, loss, _ in points)
                print(f"round {round_} {label:>12}: to {args.target}: step {hit[0]}, {_s(hit[1])}; "
                      f"final val {points[-1][1]:.4f} in {points[-1][2]:.1f} s  [{curve}]", flush=True)  # fmt: skip
    summarize(results, args.target)


def summarize(results: dict[str, Result], target: float) -> None:
    """Median per variant, and each variant's ratios to the first one (same-round wall times paired)."""
    base_label, base = next(iter(results.items()))
    for label, r in results.items():
        line = (f"{label:>12}: steps to {target} {_median(r.steps_to_target)}, time to it {_s(_median(r.seconds_to_target))}, "
                f"final val {statistics.median(r.final_loss):.4f}, run {statistics.median(r.seconds):.1f} s")  # fmt: skip
        if label != base_label:
            step_ratio = _ratio(_median(r.steps_to_target), _median(base.steps_to_target))
            pairs = [a / b for a, b in zip(r.seconds_to_target, base.seconds_to_target) if a and b]
            time_ratio = f"{statistics.median(pairs):.2f}" if pairs else "n/a"
            step_time = statistics.median(a / b for a, b in zip(r.seconds, base.seconds))
            line += f"; vs {base_label}: steps x{step_ratio}, time to target x{time_ratio}, time per run x{step_time:.2f}"
        print(line)


def _median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if len(known) == len(values) else None  # a miss in any round: no median


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


def _s(seconds: float | None) -> str:
    return f"{seconds:.1f} s" if seconds is not None else "not reached"


if __name__ == "__main__":
    main()
