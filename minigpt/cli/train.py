"""`minigpt train`: argv to a checked `TrainConfig` (`minigpt.training.config`), then `minigpt.training.run.train`."""

from __future__ import annotations

from collections.abc import Sequence

from minigpt.cli import USER_ERROR_EXIT, configure_logging, loading, run
from minigpt.cli.common import canonical_options
from minigpt.cli.stdout import check_stdout_open, writing_stdout
from minigpt.errors import MiniGPTError, ReportedByRankZero
from minigpt.training import launch
from minigpt.training.config import TrainConfig
from minigpt.training.options import CONFIGS, build_parser, bundled_configs


def parse(argv: Sequence[str]) -> TrainConfig:
    """The checked config that argv asks for; --help and --help_all print and exit."""
    argv = canonical_options(argv)
    for flag, full in (("-h", False), ("--help", False), ("--help_all", True)):
        if flag in argv:
            # Not print_help: argparse drops a failed write (a full disk) and would end with 0, the help lost.
            print(build_parser(every_trainer_option=full).format_help(), end="")
            raise SystemExit(0)
    return TrainConfig.from_options(argv)


def list_configs() -> str:
    """One line per bundled config: its name, then the first line of its header comment (one sentence) in a
    column that clears the longest name."""
    names = bundled_configs()
    width = max(map(len, names))
    lines = []
    for name in names:
        first = (CONFIGS / f"{name}.yaml").read_text().splitlines()[0]
        lines.append(f"{name:<{width}}  {first.lstrip('#').strip()}")
    return "\n".join(lines)


PRINTING = ("--list_configs", "-h", "--help", "--help_all", "--print_config")
"""Options that print something and end the command instead of training."""


def main(argv: Sequence[str]) -> None:
    options = canonical_options(argv)
    if any(option.split("=")[0] in PRINTING for option in options):
        check_stdout_open()  # a closed or full standard output is one line, a reader gone (| head) is quiet
        with writing_stdout():
            _print(options)
        return
    with loading():  # parsing imports Lightning (the options include the Trainer's)
        config = _parse(argv)
        # Imported once the arguments are known good: --help, --list_configs and a bad option need no data side.
        from minigpt.training.run import train

    try:
        train(config, setup_process=configure_process)
    except BaseException as stop:
        if isinstance(stop, ReportedByRankZero):  # a divergence, a bad setting, a signal: every process meets it
            launch.let_rank_zero_report()
        launch.wait_for_rank_zero()
        raise


def _print(options: Sequence[str]) -> None:
    """What --list_configs, --help, --help_all or --print_config (among canonical `options`) print."""
    if "--list_configs" in options:
        print(list_configs())
        return
    try:
        with loading():
            _parse(options)
    except SystemExit as done:  # argparse's and jsonargparse's way to end after printing
        if done.code:
            raise


def _parse(argv: Sequence[str]) -> TrainConfig:
    try:
        return parse(argv)
    except MiniGPTError:
        if launch.is_rank_zero():
            raise
        launch.let_rank_zero_report()  # every process parses the same arguments: rank 0 says what is wrong
        raise ReportedByRankZero(USER_ERROR_EXIT) from None


def configure_process(label: str | None) -> None:
    """What a worker process that ddp_spawn starts (without running this command) needs from it; `label` as in
    `minigpt.training.launch.process_label`."""
    from minigpt.training.run import quiet_lightning  # see main

    configure_logging(label)
    quiet_lightning()


if __name__ == "__main__":
    raise SystemExit(run(main))
