"""`minigpt generate` (generate.py): options and their spelling, prompts, output, --interactive, one-line user
errors, and a quick start (no Lightning import)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigpt.cli import attention, run
from minigpt.cli.generate import DIVIDER, build_parser, main, parse_args, print_completions, sampling_settings
from minigpt.sample import SamplingSettings

REPO = Path(__file__).resolve().parents[1]


def cli(argv: list[str], stdin: str | io.TextIOBase | None = None, stdin_closed: bool = False) -> tuple[int, str, str]:
    """Run the command in-process like generate.py does; return (exit code, stdout, stderr).

    `stdin` is text or a file; `stdin_closed` plays `<&-`: Python then sets sys.stdin to None.
    """
    out, err = io.StringIO(), io.StringIO()
    fake_stdin = io.StringIO(stdin) if isinstance(stdin, str) else sys.stdin if stdin is None else stdin
    if stdin_closed:
        fake_stdin = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), mock.patch.object(sys, "stdin", fake_stdin):
        try:
            code = run(main, argv)
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, out: str, err: str) -> None:
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err


def greedy(ckpt: Path, *extra: str) -> list[str]:
    return ["--ckpt", str(ckpt), "--max_new_tokens", "12", "--temperature", "0", *extra]


# ---- output --------------------------------------------------------------------------------------


def test_same_seed_same_output_other_seed_other_output(tiny_checkpoint: Path) -> None:
    argv = ["--ckpt", str(tiny_checkpoint), "--prompt", "ROMEO:", "--max_new_tokens", "40", "--top_k", "50"]
    code, first, _ = cli([*argv, "--seed", "1"])
    assert code == 0 and first.startswith("ROMEO:") and len(first) > len("ROMEO:\n")
    assert cli([*argv, "--seed", "1"])[1] == first
    assert cli([*argv, "--seed", "2"])[1] != first


def test_several_samples_print_under_dividers(tiny_checkpoint: Path) -> None:
    code, out, _ = cli(greedy(tiny_checkpoint, "--prompt", "a", "--num_samples", "3", "--temperature", "1"))
    assert code == 0
    dividers = [line for line in out.splitlines() if line.startswith(DIVIDER)]
    assert dividers == [f"{DIVIDER} sample {i}/3 {DIVIDER}" for i in (1, 2, 3)]
    assert out.count(f"{DIVIDER}\na") == 3  # every sample starts with the prompt


def test_one_sample_streams_the_prompt_then_each_piece_before_the_next_is_made(capsys) -> None:
    def pieces():
        for i, text in enumerate(["ab", "cd", "é"]):
            assert capsys.readouterr().out == ["Q:", "ab", "cd"][i]
            yield 0, text

    assert print_completions("Q:", pieces(), 1) == ["abcdé"]
    assert capsys.readouterr().out == "é\n"


def test_a_streamed_sample_not_kept_is_still_printed_whole(capsys) -> None:
    assert print_completions("Q:", iter([(0, "ab"), (0, "cd")]), 1, keep=False) == [""]
    assert capsys.readouterr().out == "Q:abcd\n"


def test_stop_string_is_not_printed(tiny_checkpoint: Path) -> None:
    argv = greedy(tiny_checkpoint, "--prompt", "x", "--max_new_tokens", "40")
    full = cli(argv)[1].removeprefix("x")
    stop = full[15:18]
    code, out, _ = cli([*argv, "--stop", stop])
    assert code == 0
    assert out == "x" + full[: full.find(stop)] + "\n"


# ---- prompts -------------------------------------------------------------------------------------


def test_prompt_file_stdin_and_dash_give_the_same_prompt(tiny_checkpoint: Path, tmp_path: Path) -> None:
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("To be, or not", encoding="utf-8")
    expected = cli(greedy(tiny_checkpoint, "--prompt", "To be, or not"))[1]
    assert cli(greedy(tiny_checkpoint, "--prompt_file", str(prompt_file)))[1] == expected
    assert cli(greedy(tiny_checkpoint), stdin="To be, or not")[1] == expected
    assert cli(greedy(tiny_checkpoint, "--prompt", "-"), stdin="To be, or not")[1] == expected
    assert cli(greedy(tiny_checkpoint, "--prompt", "Something else"))[1] != expected


def test_closed_stdin_is_an_empty_prompt_unless_dash_asks_to_read_it(tiny_checkpoint: Path) -> None:
    code, out, _ = cli(greedy(tiny_checkpoint), stdin_closed=True)
    assert code == 0 and out == cli(greedy(tiny_checkpoint, "--prompt", ""))[1]
    result = cli(greedy(tiny_checkpoint, "--prompt", "-"), stdin_closed=True)
    assert_one_line_error(*result)
    assert "standard input" in result[2] and "closed" in result[2]


def test_prompt_longer_than_the_context_still_generates(tiny_checkpoint: Path) -> None:
    code, out, _ = cli(greedy(tiny_checkpoint, "--prompt", "long " * 50))
    assert code == 0 and out.endswith("\n")


# ---- --interactive -------------------------------------------------------------------------------


class Terminal(io.StringIO):
    """Standard input that is a terminal, where the user types its text."""

    def isatty(self) -> bool:
        return True


class CtrlCAtTheEnd(io.StringIO):
    """Standard input whose user presses Ctrl-C at the prompt once its text is read."""

    def readline(self, size: int = -1) -> str:
        line = super().readline(size)
        if not line:
            signal.raise_signal(signal.SIGINT)  # through the handler `run` installed, as a real Ctrl-C
        return line


def sampled(ckpt: Path, *extra: str) -> list[str]:
    return ["--ckpt", str(ckpt), "--max_new_tokens", "12", "--top_k", "50", "--seed", "1", *extra]


def alone(ckpt: Path, prompt: str) -> str:
    """What a run of `prompt` alone prints."""
    code, out, _ = cli(sampled(ckpt, "--prompt", prompt))
    assert code == 0
    return out


def piped(*answers: str) -> str:
    """What --interactive prints for `answers` read from a pipe or file: each under a divider line."""
    return "".join(f"{'-' * 20} prompt {n} {'-' * 20}\n{answer}" for n, answer in enumerate(answers, 1))


def test_interactive_prints_each_answer_as_a_run_of_its_prompt_alone_with_the_same_seed(tiny_checkpoint: Path) -> None:
    code, out, err = cli(sampled(tiny_checkpoint, "--interactive"), stdin="ROMEO:\nJULIET:\n")
    assert code == 0 and err == ""
    assert out == piped(alone(tiny_checkpoint, "ROMEO:"), alone(tiny_checkpoint, "JULIET:"))


def test_interactive_with_piped_input_puts_a_divider_line_before_each_answer(tiny_checkpoint: Path) -> None:
    out = cli(sampled(tiny_checkpoint, "--interactive"), stdin="ROMEO:\nJULIET:\n")[1]
    lines = out.splitlines()
    assert lines[0] == "-" * 20 + " prompt 1 " + "-" * 20 and lines[1].startswith("ROMEO:")
    assert lines.index("-" * 20 + " prompt 2 " + "-" * 20) > 1


def test_interactive_skips_empty_lines_and_joins_lines_ending_in_a_backslash(tiny_checkpoint: Path) -> None:
    code, out, _ = cli(sampled(tiny_checkpoint, "--interactive"), stdin="\nROMEO:\\\n\\\nO\n\n")
    assert code == 0
    assert out == piped(alone(tiny_checkpoint, "ROMEO:\n\nO"))


def test_interactive_reads_windows_line_breaks_and_a_last_line_without_one(tiny_checkpoint: Path) -> None:
    out = cli(sampled(tiny_checkpoint, "--interactive"), stdin="a\r\nb")[1]
    assert out == piped(alone(tiny_checkpoint, "a"), alone(tiny_checkpoint, "b"))


def test_interactive_shows_its_markers_on_stderr_only_on_a_terminal(tiny_checkpoint: Path) -> None:
    code, out, err = cli(sampled(tiny_checkpoint, "--interactive"), stdin=Terminal("a\\\nb\n"))
    assert code == 0 and out == alone(tiny_checkpoint, "a\nb")
    assert err == "> ... > \n"  # the last marker waits for a prompt; Ctrl-D ends its line


def test_interactive_ends_with_exit_0_when_the_input_ends(tiny_checkpoint: Path) -> None:
    assert cli(sampled(tiny_checkpoint, "--interactive"), stdin="") == (0, "", "")


def test_ctrl_c_at_the_interactive_prompt_stops_with_one_line_and_exit_130(tiny_checkpoint: Path) -> None:
    code, out, err = cli(sampled(tiny_checkpoint, "--interactive"), stdin=CtrlCAtTheEnd("a\n"))
    assert (code, out, err) == (130, piped(alone(tiny_checkpoint, "a")), "stopped by Ctrl-C\n")


def test_ctrl_c_during_an_interactive_answer_stops_with_one_line_and_exit_130(tiny_checkpoint: Path) -> None:
    def interrupted(*args: object, **kwargs: object):
        yield 0, " so far"
        signal.raise_signal(signal.SIGINT)

    with mock.patch("minigpt.cli.generate.stream", interrupted):
        code, out, err = cli(sampled(tiny_checkpoint, "--interactive"), stdin="a\nb\n")
    assert (code, out, err) == (130, piped("a so far"), "stopped by Ctrl-C\n")


@pytest.mark.parametrize(
    "extra, why",
    [
        (["--prompt", "hi"], "drop --prompt"), (["--prompt", "-"], "drop --prompt"),
        (["--prompt_file", "p.txt"], "drop --prompt_file"), (["--num_samples", "2"], "--num_samples"),
        (["--attention", "maps"], "--attention"),
    ],
)  # fmt: skip
def test_interactive_with_an_option_it_cannot_honour_is_a_one_line_error_before_loading(
    tmp_path: Path, extra: list[str], why: str
) -> None:
    # The checkpoint does not exist: the error names --interactive, so it came first.
    code, out, err = cli(["--ckpt", str(tmp_path / "missing.ckpt"), "--interactive", *extra], stdin="a\n")
    assert_one_line_error(code, out, err)
    assert "--interactive" in err and why in err


def test_interactive_with_a_closed_or_undecodable_stdin_is_a_one_line_error(tiny_checkpoint: Path) -> None:
    assert_one_line_error(*cli(sampled(tiny_checkpoint, "--interactive"), stdin_closed=True))
    undecodable = io.TextIOWrapper(io.BytesIO(b"a\n\xff\n"), encoding="utf-8")
    code, out, err = cli(sampled(tiny_checkpoint, "--interactive"), stdin=undecodable)
    assert code == 2 and err.startswith("error: cannot read a prompt from standard input") and err.count("\n") == 1


# ---- user errors ---------------------------------------------------------------------------------


def test_utf8_that_a_c_locale_read_as_escaped_bytes_is_the_text_it_holds(tiny_checkpoint):
    """With LC_ALL=C and PYTHONUTF8=0, "héllo" arrives as "h\\udcc3\\udca9llo": it was refused as not UTF-8."""
    argv = ["--ckpt", str(tiny_checkpoint), "--max_new_tokens", "3", "--temperature", "0"]
    assert cli([*argv, "--prompt", "h\udcc3\udca9llo"]) == cli([*argv, "--prompt", "héllo"])
    assert cli([*argv, "--prompt", "-"], stdin="h\udcc3\udca9llo") == cli([*argv, "--prompt", "héllo"])


@pytest.mark.parametrize(
    "argv, stdin",
    [
        (["--prompt", "a\udcff"], None),  # what Python makes of the byte 0xff on a command line
        (["--prompt", "hi", "--stop", "\udcffx"], None),
        (["--prompt", "-"], "a\udcffb"),  # a standard input read with surrogateescape (the C locale)
        (["--interactive"], "fine\n\udcff\udcff\n"),
    ],
    ids=["prompt", "stop", "stdin", "interactive"],
)
def test_bytes_that_are_not_utf8_are_refused_not_turned_into_replacement_characters(tiny_checkpoint, argv, stdin):
    code, out, err = cli(["--ckpt", str(tiny_checkpoint), "--max_new_tokens", "2", *argv], stdin=stdin)
    assert code == 2 and "not valid UTF-8: byte 0xff at character" in err and err.count("\n") == 1, err
    assert out == "" if "--interactive" not in argv else out.count(" prompt ") == 1  # only the first was answered



@pytest.mark.parametrize(
    "bad",
    [
        ["--temperature", "-1"], ["--temperature", "nan"], ["--top_k", "0"], ["--top_k", "-3"],
        ["--top_p", "0"], ["--top_p", "1.5"], ["--top_p", "nan"], ["--repetition_penalty", "0.5"],
        ["--max_new_tokens", "0"], ["--num_samples", "0"], ["--stop", ""], ["--top_k", "many"],
        ["--temperature", "warm"], ["--device", "tpu"], ["--no-such-option"], ["--prompt_file", "/no/such/file"],
        ["--top_heads", "0"], ["--top_heads", "-1"], ["--top_heads", "three"],
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_errors(tiny_checkpoint: Path, bad: list[str]) -> None:
    assert_one_line_error(*cli(["--ckpt", str(tiny_checkpoint), "--prompt", "hi", *bad]))


@pytest.mark.parametrize("name", ["missing.txt", "missing\nwith a newline.txt", "."])
def test_unreadable_prompt_file_is_a_one_line_error(tiny_checkpoint: Path, tmp_path: Path, name: str) -> None:
    assert_one_line_error(*cli(["--ckpt", str(tiny_checkpoint), "--prompt_file", str(tmp_path / name)]))


@pytest.mark.parametrize("where", ["the file itself", "a folder under the file"])
def test_attention_folder_that_is_a_file_fails_before_sampling(tiny_checkpoint: Path, where: str) -> None:
    target = tiny_checkpoint if where == "the file itself" else tiny_checkpoint / "maps"
    result = cli(greedy(tiny_checkpoint, "--prompt", "hi", "--attention", str(target)))
    assert_one_line_error(*result)  # nothing on stdout: sampling never started
    assert "is a file, not a folder" in result[2]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_attention_folder_in_a_read_only_folder_fails_before_sampling(tiny_checkpoint: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    result = cli(greedy(tiny_checkpoint, "--prompt", "hi", "--attention", str(locked / "maps")))
    assert_one_line_error(*result)
    assert "not writable" in result[2]


def test_closed_stdout_is_a_one_line_error(tiny_checkpoint: Path, capsys) -> None:
    with mock.patch.object(sys, "stdout", None):
        code = run(main, greedy(tiny_checkpoint, "--prompt", "hi"))
    assert_one_line_error(code, *capsys.readouterr())


def test_stdout_that_cannot_encode_the_text_is_a_one_line_error(tiny_checkpoint: Path, capsys) -> None:
    ascii_stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    with mock.patch.object(sys, "stdout", ascii_stdout):
        code = run(main, greedy(tiny_checkpoint, "--prompt", "café"))
    assert_one_line_error(code, *capsys.readouterr())


def test_a_reader_that_goes_away_ends_the_output_quietly(tiny_checkpoint: Path, capsys) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` after it has read enough
    with open(write_end, "w") as gone, mock.patch.object(sys, "stdout", gone):
        code = run(main, greedy(tiny_checkpoint, "--prompt", "hi"))
    assert code == 0 and "error:" not in capsys.readouterr().err


def test_missing_or_unreadable_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(*cli(["--ckpt", str(tmp_path / "missing.ckpt"), "--prompt", "hi"]))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    assert_one_line_error(*cli(["--ckpt", str(garbage), "--prompt", "hi"]))
    assert_one_line_error(*cli(["--prompt", "hi"]))  # --ckpt is required


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_a_missing_gpu_is_a_one_line_error(tiny_checkpoint: Path) -> None:
    assert_one_line_error(*cli(["--ckpt", str(tiny_checkpoint), "--prompt", "hi", "--device", "cuda"]))


def test_help_documents_every_option() -> None:
    text = build_parser().format_help()
    options = ["--ckpt", "--prompt", "--prompt_file", "--max_new_tokens", "--temperature", "--top_k", "--top_p",
               "--repetition_penalty", "--stop", "--num_samples", "--seed", "--interactive", "--device"]  # fmt: skip
    for action in build_parser()._actions:
        assert action.help, action.option_strings
    assert all(option in text for option in options)



# ---- option spelling -----------------------------------------------------------------------------


def test_options_are_declared_with_underscores_and_their_dashed_spelling_parses_the_same() -> None:
    actions = build_parser()._actions
    assert not [o for a in actions for o in a.option_strings if "-" in o.lstrip("-")]
    underscored = ["--ckpt", "c"]
    for action in actions:
        option = action.option_strings[-1] if action.option_strings else ""
        if "_" in option:
            underscored += [option] if action.nargs == 0 else [option, action.choices[0] if action.choices else "2"]
    known = {"--prompt_file", "--max_new_tokens", "--top_k", "--top_p", "--repetition_penalty", "--num_samples",
             "--per_head", "--top_heads", "--attention_completion"}  # fmt: skip
    assert known <= set(underscored)
    dashed = [arg.replace("_", "-") if arg.startswith("--") else arg for arg in underscored]
    parsed = parse_args(underscored)
    assert parse_args(dashed) == parsed
    defaults = parse_args(["--ckpt", "c"])
    assert all(getattr(parsed, a.dest) != getattr(defaults, a.dest) for a in actions if "_" in "".join(a.option_strings))


def test_sampling_options_make_one_settings_object_with_the_library_defaults() -> None:
    assert sampling_settings(parse_args(["--ckpt", "c"])) == SamplingSettings()
    argv = ["--ckpt", "c", "--max_new_tokens", "7", "--temperature", "0", "--top_k", "5", "--top_p", "0.5",
            "--repetition_penalty", "1.5", "--stop", "a", "--stop", "b", "--num_samples", "3", "--seed", "9"]  # fmt: skip
    expected = SamplingSettings(
        max_new_tokens=7, temperature=0, top_k=5, top_p=0.5, repetition_penalty=1.5, stop=("a", "b"), num_samples=3, seed=9
    )
    assert sampling_settings(parse_args(argv)) == expected


def test_usage_errors_name_the_underscore_spelling_and_the_minigpt_command(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        run(attention.main, ["--ckpt", "c", "--prompt", "p", "--out", str(tmp_path), "--top-heads", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: argument --top_heads: must be at least 1, got 0 (see minigpt attention --help)\n"
    code, out, err = cli(["--ckpt", "c", "--top-k", "many"])
    assert_one_line_error(code, out, err)
    assert "--top_k" in err and "(see minigpt generate --help)" in err


CKPT = "CKPT"  # in an INVALID argument: the path of the checkpoint, an existing file

INVALID = st.one_of(
    st.floats(max_value=-1e-6).map(lambda t: f"--temperature={t}"),
    st.sampled_from(["nan", "inf", "hot", ""]).map(lambda t: f"--temperature={t}"),
    st.integers(max_value=0).map(lambda k: f"--top_k={k}"),
    st.text(max_size=3).map(lambda k: f"--top_k={k}x"),
    st.floats().filter(lambda p: not 0 < p <= 1).map(lambda p: f"--top_p={p}"),
    st.floats(max_value=0.999).map(lambda r: f"--repetition_penalty={r}"),
    st.integers(max_value=0).map(lambda n: f"--max_new_tokens={n}"),
    st.integers(max_value=0).map(lambda n: f"--num_samples={n}"),
    st.just("--stop="),
    st.integers(max_value=0).map(lambda k: f"--top_heads={k}"),
    st.text(max_size=5).filter(lambda d: d not in {"auto", "cpu", "cuda", "mps"}).map(lambda d: f"--device={d}"),
    st.sampled_from([f"--attention={CKPT}", f"--attention={CKPT}/maps"]),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=st.one_of(st.just("-"), st.text(max_size=40)),
    max_new_tokens=st.integers(1, 8),
    temperature=st.floats(0, 3),
    top_k=st.one_of(st.none(), st.integers(1, 300)),
    top_p=st.one_of(st.none(), st.floats(0, 1, exclude_min=True)),
    penalty=st.floats(1, 3),
    stops=st.lists(st.text(min_size=1, max_size=3), max_size=2),
    num_samples=st.integers(1, 3),
    seed=st.one_of(st.none(), st.integers(-(2**40), 2**40)),
    device=st.sampled_from(["auto", "cpu"]),
    top_heads=st.integers(1, 10**6),
    stdin_closed=st.booleans(),
    invalid=st.one_of(st.none(), INVALID),
)
def test_valid_arguments_complete_and_invalid_ones_give_a_one_line_error(
    tiny_checkpoint: Path, prompt, max_new_tokens, temperature, top_k, top_p, penalty, stops, num_samples, seed,
    device, top_heads, stdin_closed, invalid,
) -> None:  # fmt: skip
    argv = [f"--ckpt={tiny_checkpoint}", f"--prompt={prompt}", f"--max_new_tokens={max_new_tokens}"]
    argv += [f"--temperature={temperature}", f"--repetition_penalty={penalty}", f"--num_samples={num_samples}"]
    argv += [f"--stop={s}" for s in stops]
    argv += [] if top_k is None else [f"--top_k={top_k}"]
    argv += [] if top_p is None else [f"--top_p={top_p}"]
    argv += [] if seed is None else [f"--seed={seed}"]
    argv += [f"--device={device}", f"--top_heads={top_heads}"]
    argv += [] if invalid is None else [invalid.replace(CKPT, str(tiny_checkpoint))]  # overrides an earlier value
    code, out, err = cli(argv, stdin="from stdin", stdin_closed=stdin_closed)  # --prompt=- reads it
    assert code in {0, 2} and "Traceback" not in err
    if invalid is None and not (stdin_closed and prompt == "-"):
        assert code == 0, err
        assert out.endswith("\n")
    else:
        assert_one_line_error(code, out, err)


# ---- the real command ----------------------------------------------------------------------------


def test_generate_py_prints_a_completion_without_importing_lightning_datasets_or_matplotlib(tiny_checkpoint: Path) -> None:
    cmd = [sys.executable, "-X", "importtime", str(REPO / "generate.py"), *greedy(tiny_checkpoint, "--prompt", "hi")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n") and len(result.stdout) > 1
    log = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    imported = {line.rsplit("|", 1)[-1].strip() for line in log}
    assert "torch" in imported  # the import log was read
    heavy = {name for name in imported if name.split(".")[0] in {"lightning", "pytorch_lightning", "datasets", "matplotlib"}}
    assert not heavy


def test_generate_py_interactive_answers_piped_prompts_like_single_runs(tiny_checkpoint: Path) -> None:
    argv = ["--ckpt", str(tiny_checkpoint), "--seed", "1", "--max_new_tokens", "5"]
    cmd = [sys.executable, str(REPO / "generate.py"), *argv, "--interactive"]
    # One thread, like the in-process runs (conftest), so the arithmetic is the same; bytes, so no \r is rewritten.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(cmd, input=b"a\nb\n", capture_output=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    singles = [cli([*argv, "--prompt", prompt]) for prompt in ("a", "b")]
    assert [code for code, _, _ in singles] == [0, 0]
    assert result.stdout == piped(*(out for _, out, _ in singles)).encode()


def test_generate_py_bad_argument_exits_2_with_one_line_and_no_traceback(tiny_checkpoint: Path) -> None:
    cmd = [sys.executable, str(REPO / "generate.py"), "--ckpt", str(tiny_checkpoint), "--temperature", "-1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert_one_line_error(result.returncode, result.stdout, result.stderr)


def test_generate_py_on_a_full_disk_is_a_one_line_error(tiny_checkpoint: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    cmd = [sys.executable, str(REPO / "generate.py"), *greedy(tiny_checkpoint, "--prompt", "hi")]
    with open("/dev/full", "w") as full:
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: cannot write to standard output: No space left on device"]
    assert result.stderr.endswith(errors[0] + "\n")


def test_attention_option_writes_the_maps_of_prompt_and_completion(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    code, stdout, _ = cli(greedy(tiny_checkpoint, "--prompt", "hello", "--attention", str(out), "--attention_completion"))
    assert code == 0
    assert {"overview.png", "attention.html", "attention.npz", "heads.json", "layer_0.png"} <= {p.name for p in out.iterdir()}
    import numpy as np

    tokens = list(np.load(out / "attention.npz")["tokens"])
    assert tokens[:5] == list("hello") and len(tokens) > 5  # the prompt, then the completion
    assert "previous-token heads:" in stdout


def test_attention_layer_out_of_range_fails_before_sampling(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = cli(greedy(tiny_checkpoint, "--prompt", "hello", "--attention", str(tmp_path / "maps"), "--layers", "7"))
    assert_one_line_error(*result)
    assert "--layers 7" in result[2] and not (tmp_path / "maps").exists()


def test_attention_with_ablate_measures_head_importance_on_the_drawn_text(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import json

    import numpy as np

    out = tmp_path / "maps"
    argv = greedy(tiny_checkpoint, "--prompt", "hello", "--attention", str(out), "--attention_completion", "--ablate")
    code, stdout, _ = cli(argv)
    assert code == 0 and (out / "importance.png").is_file()
    ablated = json.loads((out / "heads.json").read_text())["ablation"]
    drawn = np.load(out / "attention.npz")["tokens"]  # all of them: fewer than block_size
    assert ablated["on"] == "the prompt and its completion" and ablated["tokens"] == len(drawn) - 1 > len("hello")
    assert "on the prompt and its completion:" in stdout


def test_attention_with_ablate_and_data_measures_what_the_attention_command_measures(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    text = tmp_path / "text.txt"
    text.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(50)))
    data = ["--ablate", "--data", str(text), "--ablate_windows", "5"]
    code, generated, _ = cli(greedy(tiny_checkpoint, "--prompt", "hello", "--attention", str(tmp_path / "g"), *data))
    assert code == 0
    with contextlib.redirect_stdout(io.StringIO()) as drawn:
        assert run(attention.main, ["--ckpt", str(tiny_checkpoint), "--prompt", "hi", "--out", str(tmp_path / "a"), *data]) == 0
    importance = [line for line in generated.splitlines() if "heads the loss needs most" in line]
    assert importance and importance[0] in drawn.getvalue()  # the same windows, whatever text was drawn
    assert f"on 5 windows of the val split of {text}" in generated


@pytest.mark.parametrize("option", [["--ablate"], ["--data", "x.txt"], ["--layers", "0"], ["--per_head"], ["--attention_completion"]])
def test_attention_options_without_attention_are_refused_not_ignored(tiny_checkpoint: Path, option: list[str]) -> None:
    result = cli(greedy(tiny_checkpoint, "--prompt", "hello", *option))
    assert_one_line_error(*result)
    assert f"{option[0]} belongs to the attention report: add --attention OUT_DIR" in result[2]


# ---- unbounded inputs are refused, not read until memory runs out ---------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_an_endless_prompt_file_is_a_one_line_error(tiny_checkpoint: Path, device: str) -> None:
    code, out, err = cli(greedy(tiny_checkpoint, "--prompt_file", device))
    assert_one_line_error(code, out, err)
    assert f"prompt file '{device}'" in err and ("longer than 16,777,216 characters" in err or "utf-8" in err)


def test_an_endless_piped_prompt_is_a_one_line_error(tiny_checkpoint: Path) -> None:
    with open("/dev/zero", encoding="utf-8") as zeros:
        code, out, err = cli(greedy(tiny_checkpoint, "--prompt", "-"), stdin=zeros)
    assert_one_line_error(code, out, err)
    assert "the prompt on standard input is longer than" in err


def test_an_endless_line_in_interactive_mode_is_a_one_line_error(tiny_checkpoint: Path) -> None:
    with open("/dev/zero", encoding="utf-8") as zeros:
        code, out, err = cli(greedy(tiny_checkpoint, "--interactive"), stdin=zeros)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert "a prompt from standard input is longer than" in err


def test_an_absurd_number_of_samples_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    code, out, err = cli(["--ckpt", str(tmp_path / "missing.ckpt"), "--prompt", "a", "--num_samples", "100000000"])
    assert_one_line_error(code, out, err)
    assert "num_samples must be from 1 to 1024, got 100000000" in err
