"""The options of `minigpt train` and how they resolve into a `TrainConfig`: the bundled defaults
(configs/default.yaml), then config files or bundled configs by name, then single options, applied in turn by
jsonargparse; --resume starts from the run's own config.yaml. The parser is also `--help`'s text.

`TrainConfig.load` (Python) and `TrainConfig.from_options` (the command's argv) both come here. Building the
parser imports Lightning, for the Trainer's options, except for the short --help; importing this module does not.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter, Namespace

from minigpt import checkpoint
from minigpt.errors import MiniGPTError, check_lookup
from minigpt.model import GPTConfig
from minigpt.suggest import closest_option, did_you_mean, option_names
from minigpt.training.config import GROUPS, OptimConfig, TrainConfig
from minigpt.training.finetune import SHAPE

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
"""The bundled configs (package data); `default.yaml` holds the recipe a plain run uses."""
DEFAULT_CONFIG = CONFIGS / "default.yaml"
# Set by minigpt itself (run folder, logger, checkpointing); not offered as --trainer.* options.
TRAINER_SKIP = {"logger", "callbacks", "plugins", "default_root_dir", "enable_checkpointing", "enable_autolog_hparams"}
COMMON_TRAINER = {  # the Trainer options `--help` shows, with Lightning's defaults (a test checks them against the
    # Trainer's signature), so that --help needs no Lightning; `--help_all` shows every one, in Lightning's own words
    "max_steps": (-1, "optimizer steps to train for"),
    "val_check_interval": (None, "validate, log and save best.ckpt every N steps"),
    "accelerator": ("auto", "cpu, gpu, mps or auto"),
    "devices": ("auto", "devices (processes) per machine, e.g. 2"),
    "strategy": ("auto", "auto, ddp, ddp_spawn, fsdp, ... (see docs/devices.md)"),
    "num_nodes": (1, "machines taking part in a distributed run"),
    "precision": (None, "32-true, bf16-mixed, 16-mixed; unset: bf16-mixed on GPUs that support it, else 32-true"),
    "accumulate_grad_batches": (1, "batches whose gradients make one optimizer step"),
    "gradient_clip_val": (None, "clip the gradient norm to this value (0: off)"),
    "log_every_n_steps": (None, "log the training metrics every N steps"),
}
DESCRIPTION = """Train a GPT with PyTorch Lightning. Each option shows the value a plain run uses: the bundled
default config's (see --list_configs), else its own default. A --config file overrides these, and each option given
overrides both; any option can also be set in a YAML file, under its dotted name."""
UNRECOGNIZED = "unrecognized arguments: "  # how jsonargparse's message for unknown options starts
USAGE = "minigpt train [--config NAME|FILE] [--resume RUN] [--OPTION VALUE ...]"

class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help without each option's type (its default shows it), so --help stays short."""

    def _get_type_str(self, action: argparse.Action) -> None:
        return None


def build_parser(every_trainer_option: bool = True) -> ArgumentParser:
    """The options of `minigpt train`: each has a dotted name and can also be set in a YAML config; defaults
    come from `TrainConfig`'s fields and the bundled default.yaml (what --help shows is what a plain run uses)."""
    from jsonargparse import set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # the model's and optimizer's field docs
    parser = ArgumentParser(
        prog="minigpt train", usage=USAGE, description=DESCRIPTION,
        default_config_files=[str(DEFAULT_CONFIG)], exit_on_error=False, formatter_class=HelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--config", action=ActionConfigFile,
        help="a YAML file, or a bundled config's name (--list_configs lists them)",
    )  # fmt: skip
    types = typing.get_type_hints(TrainConfig)
    for option in fields(TrainConfig):
        if "help" in option.metadata:
            default = {} if option.default is MISSING else {"default": option.default}
            parser.add_argument(f"--{option.name}", type=types[option.name], help=option.metadata["help"], **default)
    parser.add_class_arguments(GPTConfig, "model", skip={"vocab_size"})
    parser.add_class_arguments(OptimConfig, "optim")
    if every_trainer_option:
        from lightning import Trainer  # here, not at the top: TrainConfig and --help need no Lightning

        parser.add_class_arguments(Trainer, "trainer", skip=TRAINER_SKIP, instantiate=False)
        parser.groups["trainer"].title = "Lightning Trainer, every option (in Lightning's own words)"
    else:
        group = parser.add_argument_group("Lightning Trainer, the options used most (every one: --help_all)")
        for name, (default, text) in COMMON_TRAINER.items():
            group.add_argument(f"--trainer.{name}", help=text, default=default)
    _help_in_our_words(parser)
    return parser


def _help_in_our_words(parser: ArgumentParser) -> None:
    """Drop jsonargparse's boilerplate from --help: the group naming default.yaml's path (the description says
    where defaults come from), the --model and --optim options that read a group from a file ("Path to a
    configuration file."; --config does that), and the long texts of --help and --print_config."""
    parser._action_groups = [g for g in parser._action_groups if g is not parser._default_config_files_group]
    for action in parser._actions:
        if action.dest in ("model", "optim", "trainer"):  # the whole group's option, not one dotted field
            action.help = argparse.SUPPRESS
        elif "--help" in action.option_strings:
            action.help = "show this help and exit (--help_all: with every Trainer option)"
        elif "--print_config" in action.option_strings:
            action.help = "print the config the other options resolve to, as YAML, and exit"


def bundled_configs() -> list[str]:
    """The names of the bundled configs (`--config NAME`)."""
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def config_path(value: str) -> str:
    """The YAML file that `--config value` names: a file, else the bundled config of that name (so also
    `configs/shakespeare_cpu.yaml` from any folder, as the README writes it)."""
    check_lookup(value, "a config", "give a YAML file or a bundled config by name")
    if Path(value).is_file():
        _check_config_file(Path(value))
        return value
    name = Path(value).stem if value.endswith((".yaml", ".yml")) else value
    if name in bundled_configs() and Path(value).parent in (Path("."), Path("configs")):
        return str(CONFIGS / f"{name}.yaml")
    raise MiniGPTError(
        f"no config '{value}': give a YAML file or a bundled config by name ({', '.join(bundled_configs())})"
    )


GROUP_OPTIONS = {f"--{group}" for group in GROUPS}  # a whole group from a file or YAML text
MAX_CONFIG_BYTES = 1 << 20  # a real config is a few hundred bytes
MAX_CONFIG_NODES = 100_000  # values with aliases expanded; a real config has dozens


def _check_config_file(path: Path) -> None:
    """A config file as jsonargparse can read it safely: UTF-8 (a decoding error would escape as a traceback),
    not huge, and a mapping whose groups are mappings (see `read_config_text`)."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise MiniGPTError(f"cannot read config {path}: {err.strerror or err}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise MiniGPTError(f"config {path} is over {MAX_CONFIG_BYTES >> 20} MiB: a config is a few lines of YAML")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MiniGPTError(f"config {path} is not UTF-8 text (byte {err.start}): save it as UTF-8") from None
    read_config_text(text, f"config {path}")


def read_config_text(text: str, where: str) -> dict[str, Any]:
    """The options in a YAML config `text`, read once it is known to be safe to read: YAML whose aliases expand to
    more than `MAX_CONFIG_NODES` values (a few hundred bytes of nested anchors expand to gigabytes: "billion
    laughs"), that is not a mapping of options, whose groups (model, optim, trainer) are not mappings, or that holds
    a value YAML cannot build (a 5,000-digit number) is a `MiniGPTError` starting with `where`. The text is parsed
    once: composed into nodes (aliases not expanded), sized, then built from those nodes."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except (yaml.YAMLError, RecursionError) as err:
        raise MiniGPTError(f"{where} is not valid YAML ({str(err).splitlines()[0]})") from None
    sizes: dict[int, int | None] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            if sizes[id(node)] is None:
                raise MiniGPTError(f"{where} has an alias inside its own anchor: a config holds plain values")
            return sizes[id(node)]
        sizes[id(node)] = None
        children = node.value if isinstance(node, yaml.SequenceNode) else []
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        total = 1 + sum(size(child) for child in children)
        if total > MAX_CONFIG_NODES:
            raise MiniGPTError(f"{where} expands to over {MAX_CONFIG_NODES:,} values (YAML aliases): a config holds dozens")
        sizes[id(node)] = total
        return total

    if root is None:
        raise MiniGPTError(f"{where} is empty: write option: value lines in it, or leave it out")
    if not isinstance(root, yaml.MappingNode):
        raise MiniGPTError(f"{where} is not a mapping of options (option: value lines)")
    try:
        size(root)
    except RecursionError:
        raise MiniGPTError(f"{where} is nested too deeply: a config is option: value lines, two levels at most") from None
    for key, value in root.value:
        if key.value in GROUPS and not isinstance(value, yaml.MappingNode) and value.tag != "tag:yaml.org,2002:null":
            raise MiniGPTError(f"{where}: {key.value} must be a mapping of its options ({key.value}: then indented lines)")
    try:  # its size is bounded now: build the values, as the parser will (a 5,000-digit number fails there)
        return loader.construct_document(root)
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        raise MiniGPTError(f"{where} holds a value that cannot be read ({str(err).splitlines()[0][:120]})") from None
    finally:
        loader.dispose()


def resume_path(path: str) -> Path:
    """The checkpoint file `--resume path` continues, checked to be a run's."""
    p = checkpoint.file_to_resume(path)
    if not p.is_file():
        raise MiniGPTError(f"cannot resume: {p} not found; pass a run's last.ckpt (or its folder) to --resume")
    if not (p.parent / "config.yaml").is_file():
        raise MiniGPTError(f"cannot resume: no config.yaml beside {p}; resume only runs that minigpt train wrote")
    return p


def resolve(options: list[str], given: set[str], keywords: typing.Mapping[str, Any] | None = None) -> TrainConfig:
    """`options` (each --config a file or YAML text) applied over the bundled defaults; --resume starts from the
    run's own config, and from then on names the checkpoint file it resolves to. `keywords`, the options as
    `TrainConfig.load` takes them, are checked for unknown names first."""
    parser = build_parser()
    if keywords:
        _check_keywords(keywords, option_names(parser))
    # --print_config prints as it is parsed: only once the options are resolved as training would resolve them
    printing, options = _without_print_config(options)
    cfg = _parse_args(parser, options)
    run_config: list[str] = []
    if cfg.resume:  # the same options again, over the resumed run's own config
        resume = resume_path(cfg.resume)  # resolved once: the checkpoint file every later step uses
        run_config = ["--config", _resumed_config(resume.parent / "config.yaml")]
        cfg = _parse_args(parser, [*run_config, *options])
        run = _parse_args(parser, run_config)
        if run.get("init"):
            _keep_pretrained(run, cfg, given)
        _check_kept_on_resume(run, cfg)
        _check_folder_on_resume(run.get("out_dir"), cfg.get("out_dir"), "out_dir" in given, resume.parent)
        cfg.resume = str(resume)
    if printing:
        _parse_args(parser, [*run_config, *options, *printing])  # prints and exits
    files = [str(path) for path in cfg.get("config") or [] if path is not None]  # None: a YAML text
    config = TrainConfig.from_dict(_plain(parser, cfg), config=files[-1] if files else None, given=frozenset(given))
    config.validate()
    return config


def _parse_args(parser: ArgumentParser, options: list[str]) -> Namespace:
    try:
        return parser.parse_args(options)
    except OverflowError:  # jsonargparse turning a whole number past 1.8e308 into a float option
        raise MiniGPTError("a number is too large: a float option holds at most 1.8e308") from None
    except argparse.ArgumentError as exc:  # jsonargparse reports bad options and values this way
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        if message.startswith(UNRECOGNIZED):
            message += did_you_mean(message.removeprefix(UNRECOGNIZED).split(), option_names(parser))
        raise MiniGPTError(message) from None


def _without_print_config(options: list[str]) -> tuple[list[str], list[str]]:
    """(--print_config with its value if any, the other options)."""
    printing, rest = [], list(options)
    for i, arg in enumerate(options):
        if arg == "--print_config" or arg.startswith("--print_config="):
            has_value = arg == "--print_config" and i + 1 < len(options) and not options[i + 1].startswith("-")
            printing = options[i : i + 1 + has_value]
            rest = options[:i] + options[i + 1 + has_value :]
    return printing, rest


def _keep_pretrained(run: Namespace, asked: Namespace, given: set[str]) -> None:
    """A run started with --init took its tokenizer and shape from the source model, whatever a config said, and
    a context no longer than the source's: resumed with that same config, it keeps them again. Options given one
    by one are left as asked, to be checked."""
    for key in ("tokenizer", *(f"model.{field}" for field in SHAPE)):
        if key not in given and not (key.startswith("model.") and "model" in given):  # `--model '{...}'` asks too
            asked[key] = run[key]
    if not given & {"model", "model.block_size"} and asked["model.block_size"] > run["model.block_size"]:
        asked["model.block_size"] = run["model.block_size"]  # cropped to the source's positions, as at the start


def _check_kept_on_resume(run: Namespace, asked: Namespace) -> None:
    """A resumed run continues its own weights and tokenizer: options given on --resume (one by one, as a group, or
    in a --config) that would change the model's weights or the tokenizer are refused (they could not be applied),
    not dropped; dropout may change. (Another optimizer is refused where the checkpoint's optimizer state is restored:
    `LitGPT.on_load_checkpoint`.)"""
    keys = ["tokenizer", *(f"model.{name}" for name in sorted(vars(run.model)) if name != "dropout")]  # no weight
    for key in keys:
        if run.get(key) != asked.get(key):
            raise MiniGPTError(
                f"--{key} cannot change when resuming (the run has {run.get(key)}, asked {asked.get(key)}): to train "
                "its weights further with other settings, start a new run with --init RUN"
            )


def _check_folder_on_resume(run_out_dir: str | None, asked: str | None, given: bool, folder: Path) -> None:
    """A resumed run goes on in its own folder: another --out_dir is refused, not dropped (the run the user meant
    to keep would have been trained on instead). The run's own config.yaml may name its folder as it was when the
    run started (relative, or before it was moved): only an --out_dir given now, or by another config, is checked."""
    if asked is None or (asked == run_out_dir and not given):
        return
    try:
        same = Path(asked).resolve() == folder.resolve()
    except (OSError, ValueError):  # a name no file can have, a loop of links
        same = False
    if not same:
        raise MiniGPTError(
            f"--out_dir cannot change when resuming: the run goes on in its own folder {str(folder)!r}; to train a "
            f"copy of it, copy that folder to {asked!r} and resume the copy"
        )


def _check_keywords(keywords: typing.Mapping[str, Any], names: list[str]) -> None:
    """A keyword (`max_steps=`) or group key (`model={"n_layers": 2}`) that names no option: `MiniGPTError`
    with the closest real one as Python spells it (`trainer={"max_steps": ...}`)."""
    keys = []
    for key, value in keywords.items():
        grouped = key in GROUPS and isinstance(value, typing.Mapping)
        keys += [f"{key}.{sub}" for sub in value] if grouped else [key]
    for key in keys:
        if f"--{key}" not in names:
            closest = closest_option(f"--{key}", names)
            group, _, name = (closest or "")[2:].rpartition(".")
            spelled = f'{group}={{"{name}": ...}}' if group else f"{name}=..."
            raise MiniGPTError(f"unknown option {key!r}" + (f"; did you mean {spelled}?" if closest else ""))


def _plain(parser: ArgumentParser, cfg: Namespace) -> dict[str, Any]:
    """The parsed options as plain data (strings, numbers, lists), unset ones as None."""
    clean = cfg.clone()
    for key in ("config", "__default_config__"):
        clean.pop(key, None)
    return yaml.safe_load(parser.dump(clean, skip_none=False, skip_validation=True))


def _resumed_config(path: Path) -> str:
    """A run's config.yaml as YAML text, without the Trainer settings minigpt now sets itself (a run written
    by an older version may hold one, such as enable_autolog_hparams)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise MiniGPTError(f"cannot resume: {path} is unreadable ({type(err).__name__}); restore the run's config.yaml") from None
    config = read_config_text(text, f"cannot resume: {path}")
    if isinstance(config.get("trainer"), dict):
        config["trainer"] = {k: v for k, v in config["trainer"].items() if k not in TRAINER_SKIP}
    return yaml.safe_dump(config, sort_keys=False)


def with_config_paths(options: list[str]) -> list[str]:
    """`options` with each --config value resolved to its file (`config_path`) and checked; so is every file or
    YAML text given to a whole group (`--model FILE`, `--trainer '{...}'`), which the parser reads as a config too.
    An abbreviation the parser would take for --config (`--conf`) counts as --config."""
    out = list(options)
    for i, arg in enumerate(out):
        name, equals, value = arg.partition("=")
        if not equals:
            if i + 1 >= len(out) or not name.startswith("--"):
                continue
            value = out[i + 1]
        if len(name) > 4 and "--config".startswith(name):
            resolved = config_path(value)
        elif name in GROUP_OPTIONS:
            resolved = value
            try:
                is_file = Path(value).is_file()
            except OSError:  # a YAML text too long to be a file name
                is_file = False
            if is_file:
                _check_config_file(Path(value))
            else:
                read_config_text(value, f"{name} {value[:40]!r}")
        else:
            continue
        if equals:
            out[i] = f"{name}={resolved}"
        else:
            out[i + 1] = resolved
    return out
