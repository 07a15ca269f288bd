"""`TrainConfig` from Python: the same settings, errors and run as `minigpt train` with the same options."""

from __future__ import annotations

import inspect
import subprocess
import sys
from dataclasses import asdict, fields

import pytest
import yaml

from minigpt.cli.train import parse
from minigpt.errors import MiniGPTError
from minigpt.model import GPTConfig
from minigpt.training.config import OptimConfig, TrainConfig
from minigpt.training.options import DEFAULT_CONFIG
from tests.helpers import REPO, TEXT, tiny_config


def test_importing_the_config_does_not_import_lightning():
    code = "import sys, minigpt.training.config\nprint('lightning' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"


def test_load_gives_what_the_command_parses_from_the_same_options():
    from_python = TrainConfig.load(
        "shakespeare_cpu", data="my.txt", compile=True, target_loss=None, model={"n_layer": 2},
        optim={"lr": 1e-3}, trainer={"max_steps": 200, "precision": "bf16-mixed"},
    )  # fmt: skip
    from_command = parse([
        "--config", "shakespeare_cpu", "--data", "my.txt", "--compile", "true", "--target_loss", "null",
        "--model.n_layer", "2", "--optim.lr", "1e-3", "--trainer.max_steps", "200", "--trainer.precision", "bf16-mixed",
    ])  # fmt: skip
    assert from_python.to_dict() == from_command.to_dict()
    assert from_python.config == from_command.config  # names the run folder: runs/shakespeare_cpu


def test_load_without_arguments_is_a_plain_run():
    assert TrainConfig.load().to_dict() == parse([]).to_dict()


@pytest.mark.parametrize(
    "overrides, options",
    [
        ({"batch_size": 0}, ["--batch_size", "0"]),
        ({"val_fraction": 0.9}, ["--val_fraction", "0.9"]),
        ({"model": {"n_head": 3}}, ["--model.n_head", "3"]),
        ({"optim": {"beta1": 1.0}}, ["--optim.beta1", "1.0"]),
        ({"trainer": {"max_steps": -1}}, ["--trainer.max_steps", "-1"]),
        ({"seed": "x"}, ["--seed", "x"]),
        ({"batch_size": 2**40}, ["--batch_size", str(2**40)]),  # a division past a float in the memory check
    ],
)
def test_a_bad_value_from_python_is_the_commands_one_line_error(overrides, options):
    with pytest.raises(MiniGPTError) as from_python:
        TrainConfig.load(**overrides)
    with pytest.raises(MiniGPTError) as from_command:
        parse(options)
    assert str(from_python.value) == str(from_command.value) and "\n" not in str(from_python.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_steps": 5}, """unknown option 'max_steps'; did you mean trainer={"max_steps": ...}?"""),
        ({"model": {"n_layers": 1}}, """unknown option 'model.n_layers'; did you mean model={"n_layer": ...}?"""),
        ({"lr": 1e-3}, """unknown option 'lr'; did you mean optim={"lr": ...}?"""),
        ({"batchsize": 4}, "unknown option 'batchsize'; did you mean batch_size=...?"),
        ({"data": object()}, "data takes text, a number or true/false, got object"),
        ({"batch_size": 10**5000}, "batch_size is too large: got a 16610-bit number"),  # str() refuses it
        ({"optim": {"lr": 10**400}}, "optim.lr is too large: got a 1329-bit number"),
    ],
)
def test_an_unknown_keyword_names_the_option_as_python_spells_it(overrides, message):
    with pytest.raises(MiniGPTError) as err:
        TrainConfig.load(**overrides)
    assert str(err.value) == message


def test_a_number_past_a_float_on_the_command_line_is_one_line():
    with pytest.raises(MiniGPTError, match="a number is too large: a float option holds at most 1.8e308"):
        parse(["--optim.lr", str(10**400)])  # an OverflowError inside jsonargparse


def test_paths_and_numpy_numbers_are_the_values_they_hold(tmp_path):
    import numpy as np

    config = TrainConfig.load(data=tmp_path / "my.txt", out_dir=tmp_path / "run", trainer={"max_steps": np.int64(5)},
                              optim={"lr": np.float64(1e-3)}, model={"dropout": np.float32(0.5)})  # fmt: skip
    assert (config.data, config.out_dir) == (str(tmp_path / "my.txt"), str(tmp_path / "run"))
    assert (config.trainer["max_steps"], config.optim.lr, config.model.dropout) == (5, 1e-3, 0.5)
    assert type(config.trainer["max_steps"]) is int


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: setattr(c, "batch_size", 2.5), "--batch_size must be a whole number, got 2.5"),
        (lambda c: setattr(c, "seed", "1"), "--seed must be a whole number, got '1'"),
        (lambda c: setattr(c, "data", None), "--data must be text, got None"),
        (lambda c: setattr(c, "compile", 1), "--compile must be true or false or unset, got 1"),
        (lambda c: setattr(c.model, "n_layer", "1"), "--model.n_layer must be a whole number, got '1'"),
        (lambda c: setattr(c.optim, "name", "sgd"), "--optim.name must be one of adamw, muon, got 'sgd'"),
        (lambda c: setattr(c.optim, "lr", -1.0), "--optim.lr must be a positive number, got -1.0"),
        (lambda c: c.trainer.update(max_steps=2.5), "set --trainer.max_steps to a positive whole number"),
    ],
)
def test_a_config_changed_in_python_is_checked_again_before_training(change, message):
    config = TrainConfig.load(data="my.txt", trainer={"max_steps": 5})
    change(config)
    with pytest.raises(MiniGPTError) as err:
        config.validate()
    assert str(err.value) == message


def test_an_unknown_config_name_from_python_is_the_commands_error():
    with pytest.raises(MiniGPTError, match="no config 'nope': give a YAML file"):
        TrainConfig.load("nope")


def test_to_dict_and_from_dict_round_trip_every_bundled_config():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        config = TrainConfig.load(path)
        assert TrainConfig.from_dict(config.to_dict()).to_dict() == config.to_dict(), path.name


def test_default_yaml_sets_no_option_to_the_default_it_already_has():
    from lightning import Trainer

    field_defaults = {f.name: f.default for f in fields(TrainConfig)}
    groups = {
        "model": asdict(GPTConfig()),
        "optim": asdict(OptimConfig()),
        "trainer": {name: p.default for name, p in inspect.signature(Trainer).parameters.items()},
    }
    for key, value in yaml.safe_load(DEFAULT_CONFIG.read_text()).items():
        if key in groups:
            repeated = {name for name, v in value.items() if groups[key].get(name, object()) == v}
            assert not repeated, f"default.yaml repeats the {key} defaults of {repeated}"
        else:
            assert field_defaults[key] != value, f"default.yaml repeats the default of {key}"


def test_train_from_python_returns_the_run_folder_it_trained(tmp_path):
    from minigpt.training.run import train

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    shape = {name: value for name, value in asdict(tiny_config()).items() if name != "vocab_size"}
    config = TrainConfig.load(
        data=str(corpus), out_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), batch_size=4,
        val_windows=8, samples=0, model=shape, optim={"warmup_steps": 2},
        trainer={"max_steps": 4, "val_check_interval": 2, "accelerator": "cpu", "enable_progress_bar": False},
    )  # fmt: skip
    run_dir = train(config)
    assert run_dir == (tmp_path / "run").resolve() and (run_dir / "last.ckpt").is_file()
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == config.to_dict()


def test_a_config_file_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("seed: 1\nnote: café\n".encode("latin-1"))
    command = [sys.executable, "-m", "minigpt", "train", "--config", str(config), "--trainer.max_steps", "1"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert str(config) in done.stderr and "UTF-8" in done.stderr
