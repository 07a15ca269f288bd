"""Every command answers an unknown option with the closest real one, in one line with exit code 2: habits from
nanoGPT and the Hugging Face Trainer (`--max_steps`) find minigpt's spelling (`--trainer.max_steps`)."""

from __future__ import annotations

import contextlib
import importlib
import io

import pytest

from minigpt.cli import run

CASES = [
    ("train", ["--max_steps", "10"], "--trainer.max_steps"),
    ("train", ["--lr=3e-4"], "--optim.lr"),
    ("generate", ["--ckpt", "x", "--topk", "5"], "--top_k"),
    ("attention", ["--ckpt", "x", "--prompt", "a", "--out", "o", "--topheads", "3"], "--top_heads"),
    ("eval", ["--ckpt", "x", "--data", "y", "--batchsize", "4"], "--batch_size"),
    ("export", ["--ckpt", "x", "--out", "o", "--outt", "p"], "--out"),
]


def stderr_of(command: str, argv: list[str]) -> tuple[int, str]:
    main = importlib.import_module(f"minigpt.cli.{command}").main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = run(main, argv)
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code
    return code, err.getvalue()


@pytest.mark.parametrize("command, argv, closest", CASES, ids=[f"{c} {a[-1] if len(a) == 1 else a[-2]}" for c, a, _ in CASES])
def test_an_unknown_option_is_one_line_naming_the_closest_real_one(command: str, argv: list[str], closest: str):
    code, err = stderr_of(command, argv)
    assert code == 2 and err.count("\n") == 1, err
    assert f"did you mean {closest}?" in err, err


def test_each_of_several_unknown_options_gets_its_closest_real_one():
    code, err = stderr_of("train", ["--max_steps", "10", "--n_layer", "2"])
    assert code == 2 and err.count("\n") == 1, err
    assert "--trainer.max_steps for --max_steps" in err and "--model.n_layer for --n_layer" in err, err


def test_an_unknown_option_like_no_real_one_gets_no_guess():
    code, err = stderr_of("eval", ["--ckpt", "x", "--data", "y", "--zzzzzzzz"])
    assert code == 2 and "unrecognized arguments: --zzzzzzzz" in err and "did you mean" not in err, err


@pytest.mark.parametrize("command, argv", [("eval", ["--ckpt", "x", "--data=--"]), ("generate", ["--ckpt", "x", "--prompt=--"])])
def test_a_value_of_two_dashes_is_one_line_not_an_empty_list(command: str, argv: list[str]):
    """argparse stores [] for --data=--, which the command then met as a list (AttributeError)."""
    code, err = stderr_of(command, argv)
    assert code == 2 and err.count("\n") == 1 and "expected one value" in err, err


def test_an_option_given_many_times_still_works():
    """The '--' check above leaves options that collect values (generate --stop, given twice) alone."""
    code, err = stderr_of("generate", ["--ckpt", "x", "--prompt", "hi", "--stop", "a", "--stop", "b"])
    assert code == 2 and "expected one value" not in err and "not found" in err, err
