import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from minigpt.cli import run
from minigpt.cli.train import main, parse
from tests.helpers import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
TINY = [
    "--model.block_size", "16", "--model.n_layer", "1", "--model.n_head", "1", "--model.n_embd", "16",
    "--batch_size", "2", "--val_windows", "2", "--samples", "0", "--trainer.max_steps", "2",
    "--trainer.val_check_interval", "2", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
]  # fmt: skip


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_parses_and_sets_a_step_budget(config):
    cfg = parse(["--config", str(config)])
    assert cfg.trainer["max_steps"] > 0 and cfg.model.n_embd % cfg.model.n_head == 0


def test_cli_defaults_come_from_default_yaml():
    cfg = parse([])
    assert cfg.data == yaml.safe_load((REPO / "configs" / "default.yaml").read_text())["data"] == "pydoc"
    assert cfg.optim.name == "muon"  # where it wins (bench_optim: 0.97 vs 1.17 nats/byte); other configs name theirs
    assert parse(["--config", "shakespeare_cpu"]).optim.name == "adamw"


def test_dotted_overrides_win_over_the_config():
    cfg = parse(["--config", str(REPO / "configs" / "shakespeare_cpu.yaml"), "--model.n_layer", "3", "--tokenizer", "bpe:512"])
    assert cfg.model.n_layer == 3 and cfg.tokenizer == "bpe:512" and cfg.model.n_embd == 128


def help_text(capsys, flag: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse([flag])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_shows_the_defaults_a_plain_run_uses_and_describes_every_option(capsys):
    out = " ".join(help_text(capsys, "--help").split())
    cfg = parse([])
    assert cfg.trainer["val_check_interval"]  # a plain run validates (and so writes best.ckpt)
    for option, value in [("--batch_size", cfg.batch_size), ("--model.n_layer", cfg.model.n_layer),
                          ("--model.block_size", cfg.model.block_size), ("--optim.lr", cfg.optim.lr),
                          ("--trainer.max_steps", cfg.trainer["max_steps"]),
                          ("--trainer.val_check_interval", cfg.trainer["val_check_interval"])]:  # fmt: skip
        assert re.search(re.escape(option) + r" \S+ .*?default: " + re.escape(str(value)) + r"\)", out), option
    from minigpt.model import GPTConfig
    from minigpt.training.config import OptimConfig

    for group, config in (("model", GPTConfig), ("optim", OptimConfig)):
        for field in dataclasses.fields(config):
            if field.name != "vocab_size":
                assert re.search(rf"--{group}.{field.name} \S+ [A-Z]", out), f"--{group}.{field.name} has no description"


def test_help_is_short_and_help_all_lists_every_trainer_option(capsys):
    short = help_text(capsys, "-h")
    assert len(short.splitlines()) < 120 and "--help_all" in short and "--trainer.limit_val_batches" not in short
    assert "--trainer.limit_val_batches" in help_text(capsys, "--help_all")


@pytest.mark.parametrize("flag", ["--help", "--help_all"])
def test_help_reads_as_written_for_people_without_jsonargparses_boilerplate(capsys, flag):
    out = help_text(capsys, flag)
    for boilerplate in ("site-packages", "default.yaml']", "Note: default values", "default config file locations",
                        "Path to a configuration file", "--model CONFIG", "--optim CONFIG"):  # fmt: skip
        assert boilerplate not in out, boilerplate
    assert out.splitlines()[0].startswith("usage: minigpt train")


def test_the_short_helps_trainer_defaults_are_lightnings_own():
    import inspect

    from lightning import Trainer

    from minigpt.training.options import COMMON_TRAINER

    lightning = inspect.signature(Trainer).parameters
    assert {name: default for name, (default, _) in COMMON_TRAINER.items()} == {
        name: lightning[name].default for name in COMMON_TRAINER
    }


def test_train_help_does_not_import_lightning():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "minigpt", "train", "--help"], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and "--trainer.max_steps" in result.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert "lightning" not in imported and "lightning.pytorch" not in imported


def test_bundled_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    by_path = parse(["--config", str(REPO / "configs" / "shakespeare_cpu.yaml")])
    for spelling in ("shakespeare_cpu", "configs/shakespeare_cpu.yaml", "shakespeare_cpu.yaml"):
        assert parse(["--config", spelling]).model == by_path.model
    assert user_error(capsys, ["--config", "nope"]).startswith("error: no config 'nope': give a YAML file")
    assert run(main, ["--list_configs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == sorted(c.stem for c in CONFIGS)


def test_list_configs_gives_one_aligned_whole_sentence_per_config(capsys):
    assert run(main, ["--list_configs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(CONFIGS)
    columns = {re.match(r"\S+ +", line).end() for line in listed}
    assert len(columns) == 1, listed
    assert all(line.endswith(".") for line in listed), listed


def test_dashed_option_names_mean_the_same_as_underscored_ones():
    dashed = parse(["--batch-size", "3", "--trainer.max-steps", "7", "--model.n-layer=1"])
    assert (dashed.batch_size, dashed.trainer["max_steps"], dashed.model.n_layer) == (3, 7, 1)


def user_error(capsys, args: list[str]) -> str:
    """Run train.py in-process; assert it failed as a user error and return its one-line message."""
    assert run(main, args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_a_bug_while_parsing_is_a_traceback_and_exit_1_not_a_user_error():
    """Only jsonargparse's ArgumentError means bad input; anything else raised while parsing is a bug."""
    code = (
        "import sys, jsonargparse\n"
        "def broken(self, *args, **kwargs):\n"
        "    raise AttributeError('a bug inside parsing')\n"
        "jsonargparse.ArgumentParser.parse_args = broken\n"
        "from minigpt.cli import run\n"
        "from minigpt.cli.train import main\n"
        "sys.exit(run(main, ['--batch_size', '2']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" in done.stderr, done.stderr
    assert "AttributeError: a bug inside parsing" in done.stderr and "error:" not in done.stderr


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("some text to learn from.\n" * 50)
    return path


def common(tmp_path: Path) -> list[str]:
    return ["--out_dir", str(tmp_path / "run"), "--cache_dir", str(tmp_path / "cache"), *TINY]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.txt", "not found|no such|does not exist"),
        (lambda d: (d / "empty.txt").write_text("") and None or d / "empty.txt", "empty|no text"),
        (lambda d: (d / "latin1.txt").write_bytes("café".encode("latin-1") * 50) and None or d / "latin1.txt", "UTF-8"),
        (lambda d: (d / "short.txt").write_text("abc") and None or d / "short.txt", "fewer than one window"),
    ],
    ids=["missing", "empty", "not-utf8", "too-short"],
)
def test_bad_corpus_is_a_one_line_error(tmp_path, capsys, make, message):
    err = user_error(capsys, ["--data", str(make(tmp_path)), *common(tmp_path)])
    assert any(m.lower() in err.lower() for m in message.split("|")), err
    assert not (tmp_path / "run").exists()


def test_unknown_tokenizer_is_a_one_line_error(tmp_path, capsys, corpus):
    err = user_error(capsys, ["--data", str(corpus), "--tokenizer", "nonsense", *common(tmp_path)])
    assert "unknown tokenizer 'nonsense'" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model.n_head", "3"], "divisible"),
        (["--trainer.max_stepz", "3"], "max_stepz"),
        (["--batch_size", "0"], "batch_size"),
        (["--val_fraction", "0.9"], "val_fraction 0.9 is out of range: use a fraction from 1e-06 to 0.5"),
        (["--resume", "nowhere/last.ckpt"], "cannot resume"),
        (["--threads", "0"], "--threads must be from 1 to"),
        (["--threads", "100000"], "--threads must be from 1 to"),
        (["--compile", "maybe"], "compile"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, corpus, args, message):
    assert message in user_error(capsys, ["--data", str(corpus), *common(tmp_path), *args])


def test_a_folder_holding_a_run_is_never_overwritten(tmp_path, capsys, corpus):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.ckpt").write_bytes(b"precious")
    err = user_error(capsys, ["--data", str(corpus), *common(tmp_path)])
    assert "--resume" in err
    assert (run_dir / "last.ckpt").read_bytes() == b"precious"


@pytest.mark.e2e
def test_train_then_generate_then_inspect_as_real_commands(tmp_path):
    """The user's path: train.py on text files, then generate.py (and its attention maps) from the checkpoint alone."""
    notes = tmp_path / "notes"
    notes.mkdir()
    for n in range(3):
        (notes / f"{n}.md").write_text("".join(f"ROMEO: wherefore art thou, {i * n}?\nJULIET: here, {i}.\n" for i in range(60)))
    env_run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=300)
    trained = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--data", str(tmp_path / "notes" / "*.md"), "--tokenizer", "bpe:300",
         "--cache_dir", str(tmp_path / "cache"), *TINY, "--trainer.max_steps", "4", "--samples", "1",
         "--sample_tokens", "10"],
        **env_run,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    ckpt = tmp_path / "runs" / "default" / "last.ckpt"
    assert ckpt.is_file() and "--- sample 1 ---" in trained.stdout
    command = [sys.executable, str(REPO / "generate.py"), "--ckpt", str(ckpt), "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "1"]
    first = subprocess.run(command, **env_run)
    second = subprocess.run(command, **env_run)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and first.stdout.startswith("ROMEO:")
    inspected = subprocess.run([*command, "--attention", str(tmp_path / "maps")], **env_run)
    assert inspected.returncode == 0, inspected.stderr
    assert inspected.stdout.startswith(first.stdout) and "previous-token heads:" in inspected.stdout
    assert {"overview.png", "attention.html", "heads.json"} <= {p.name for p in (tmp_path / "maps").iterdir()}


@pytest.mark.slow
def test_shakespeare_cpu_recipe_reaches_nanogpt_loss(tmp_path, shakespeare):
    """The shipped recipe must reach 1.89 nats/byte, as nanoGPT's CPU recipe does (1.8857 nats/char); about 25 s."""
    args = ["--config", str(REPO / "configs" / "shakespeare_cpu.yaml"), "--data", str(shakespeare),
            "--out_dir", str(tmp_path / "run"), "--cache_dir", str(tmp_path / "cache"), "--samples", "0",
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
    assert run(main, args) == 0
    import torch

    best = torch.load(tmp_path / "run" / "best.ckpt", weights_only=True)
    score = next(v for k, v in best["callbacks"].items() if k.startswith("BestCheckpoint"))["best_model_score"]
    assert float(score) <= 1.89


def test_precision_is_bf16_only_on_a_capable_gpu(monkeypatch):
    import torch

    from minigpt.training.machine import pick_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert pick_precision(None, "auto") == "bf16-mixed"
    assert pick_precision(None, "cpu") == "32-true"
    assert pick_precision("16-mixed", "auto") == "16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_precision(None, "auto") == "32-true"


def test_default_run_folder_moves_past_finished_and_busy_runs(tmp_path, monkeypatch):
    from minigpt.training.run import claim_run_folder

    monkeypatch.chdir(tmp_path)
    cfg = parse(["--config", str(REPO / "configs" / "shakespeare_cpu.yaml")])
    with claim_run_folder(cfg) as first:
        assert first.path == Path("runs/shakespeare_cpu")
        (first.path / "last.ckpt").write_bytes(b"x")
    with claim_run_folder(cfg) as busy:  # held by a live run (the lock), without a checkpoint yet
        assert busy.path == Path("runs/shakespeare_cpu-2")
        with claim_run_folder(cfg) as third:
            assert third.path == Path("runs/shakespeare_cpu-3")
    assert not Path("runs/shakespeare_cpu-2").exists()  # nothing saved there: nothing left behind


def test_a_run_written_by_an_older_version_still_resumes(tmp_path):
    """Its config.yaml may hold Trainer settings minigpt now sets itself (enable_autolog_hparams)."""
    from tests.helpers import train_in_process as train

    assert train(tmp_path, "run") == 0
    config = tmp_path / "run" / "config.yaml"
    old = yaml.safe_load(config.read_text())
    old["trainer"]["enable_autolog_hparams"] = True
    config.write_text(yaml.safe_dump(old))
    assert run(main, ["--resume", str(tmp_path / "run"), "--trainer.max_steps", "8", "--samples", "0"]) == 0


def test_target_loss_stops_at_the_first_validation_that_reaches_it(tmp_path, capsys):
    import torch

    from tests.helpers import train_in_process as train

    assert train(tmp_path, "run", "--target_loss", "100") == 0  # any loss reaches 100 nats: the first validation
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert user_error(capsys, ["--target_loss", "-1"]).startswith("error: --target_loss must be a positive number")


def test_resume_starts_from_the_runs_config_and_names_its_checkpoint_file(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    config["model"]["n_layer"] = 3
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "last.ckpt").touch()
    cfg = parse(["--resume", str(run_dir), "--batch_size", "3"])
    assert (cfg.resume, cfg.model.n_layer, cfg.batch_size) == (str(run_dir / "last.ckpt"), 3, 3)


def test_an_out_dir_with_files_a_run_would_write_is_refused_and_they_are_kept(tmp_path, capsys):
    """A user's own README.md (or config.yaml, tb/ ...) in --out_dir: refused, and neither a failed run nor
    the refusal removes them; other files there are no obstacle."""
    from tests.helpers import train_in_process as train

    mine = {"README.md": "my notes", "config.yaml": "mine: 1", "notes.txt": "keep"}
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / ".lock").write_text("")  # another tool's lock, not a killed run's ("pid N on HOST")
    for out in ("given", "fails", "locked"):
        for name, text in mine.items():
            (tmp_path / out).mkdir(exist_ok=True)
            (tmp_path / out / name).write_text(text)
    (tmp_path / "given" / "tb").mkdir()
    assert train(tmp_path, "given") == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'given'} already has README.md, config.yaml, tb, which a run would overwrite" in err
    assert user_error(capsys, ["--data", str(tmp_path / "missing.txt"), "--out_dir", str(tmp_path / "fails")])
    assert "already has README.md, config.yaml, which a run would overwrite" in user_error(
        capsys, ["--data", str(tmp_path / "missing.txt"), "--out_dir", str(tmp_path / "locked")]
    )
    for out in ("given", "fails", "locked"):
        assert {name: (tmp_path / out / name).read_text() for name in mine} == mine
    assert sorted(p.name for p in (tmp_path / "given").iterdir()) == ["README.md", "config.yaml", "notes.txt", "tb"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep")
    assert train(tmp_path, "other") == 0 and (tmp_path / "other" / "notes.txt").read_text() == "keep"


def test_a_fifo_named_like_the_lock_is_one_line_not_a_hang(tmp_path, capsys):
    import os

    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / ".lock")  # reading it to see whose lock it is would block forever
    assert user_error(capsys, ["--data", "x.txt", "--out_dir", str(tmp_path / "run")]).startswith(
        f"error: cannot use {tmp_path / 'run'} as the run folder"
    )


@pytest.mark.parametrize("out", ["link", "link/run"])
def test_a_run_folder_through_a_link_to_nothing_names_the_link_and_makes_nothing(tmp_path, capsys, out):
    (tmp_path / "link").symlink_to(tmp_path / "unmounted" / "disk")  # making it would make the link's target
    assert user_error(capsys, ["--data", "x.txt", "--out_dir", str(tmp_path / out)]) == (
        f"error: cannot use {tmp_path / out} as the run folder ({str(tmp_path / 'link')!r} is a link to "
        f"{str(tmp_path / 'unmounted' / 'disk')!r}, which does not exist): choose another --out_dir"
    )
    assert sorted(os.listdir(tmp_path)) == ["link"]


def test_a_killed_runs_leftovers_are_cleared_when_its_folder_is_claimed_again(tmp_path, monkeypatch):
    """kill -9 before the first checkpoint leaves the lock file, config.yaml and tb/: the run's own files."""
    from minigpt.training.run import claim_run_folder
    from minigpt.training.run_folder import LOCK_NAME

    folder = tmp_path / "run"
    (folder / "tb").mkdir(parents=True)
    (folder / LOCK_NAME).write_text("pid 4242 on somehost\n")
    for name in ("config.yaml", "metrics.csv"):
        (folder / name).write_text("x")
    cfg = parse(["--config", str(REPO / "configs" / "shakespeare_cpu.yaml"), "--out_dir", str(folder)])
    with claim_run_folder(cfg) as claimed:
        assert sorted(p.name for p in claimed.path.iterdir()) == [LOCK_NAME]
    monkeypatch.chdir(tmp_path)  # the default runs/<config> is passed over when it has someone else's files
    (tmp_path / "runs" / "shakespeare_cpu").mkdir(parents=True)
    (tmp_path / "runs" / "shakespeare_cpu" / "README.md").write_text("mine")
    with claim_run_folder(parse(["--config", "shakespeare_cpu"])) as claimed:
        assert claimed.path == Path("runs/shakespeare_cpu-2")
    assert (tmp_path / "runs" / "shakespeare_cpu" / "README.md").read_text() == "mine"


BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)  # 342 bytes that expand to 9**9 values


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BOMB, " expands to over 100,000 values (YAML aliases): a config holds dozens"),
        ("a: &a [*a]\n", " has an alias inside its own anchor"),
        ("model: 5\n", ": model must be a mapping of its options (model: then indented lines)"),
        ("- a\n- b\n", " is not a mapping of options (option: value lines)"),
        ("", " is empty: write option: value lines in it, or leave it out"),
        ("a: [\n", " is not valid YAML"),
    ],
    ids=["alias-bomb", "recursive", "group-not-mapping", "list", "empty", "broken"],
)
def test_a_crafted_config_file_is_one_line_before_it_is_expanded(tmp_path, capsys, text, message):
    config = tmp_path / "crafted.yaml"
    config.write_text(text)
    for flag, extra in (("--config", []), ("--config", ["--print_config"]), ("--conf", [])):  # argparse's abbreviation
        assert user_error(capsys, [flag, str(config), *extra]).startswith(f"error: config {config}{message}")


@pytest.mark.parametrize(
    ("text", "message"),
    [(BOMB.replace("a: &a", "a: &a", 1) + "n_layer: 1\n", " expands to over 100,000 values"),
     ("x", " is not a mapping of options"), ("n_layer: " + "9" * 5000, " holds a value that cannot be read")],
    ids=["alias-bomb", "scalar", "huge-int"],
)  # fmt: skip
def test_a_whole_group_from_a_file_is_checked_as_a_config(tmp_path, capsys, text, message):
    """--model FILE (the parser reads a group from a file) went around the config checks: 2 GB and growing."""
    group = tmp_path / "group.yaml"
    group.write_text(text)
    for flag in ("--model", "--trainer"):
        assert user_error(capsys, [flag, str(group)]).startswith(f"error: config {group}{message}")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00bad")
    assert user_error(capsys, ["--optim", str(tmp_path / "binary.yaml")]).endswith("is not UTF-8 text (byte 0): save it as UTF-8")


def test_a_group_whose_lines_are_all_commented_out_is_empty(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("data: my.txt\nmodel:\n  # n_layer: 2\ntrainer:\n  max_steps: 4\n")
    assert parse(["--config", str(config), "--model.n_layer", "1"]).model.n_layer == 1
    config.write_text("data: my.txt\ntrainer:\n")
    assert user_error(capsys, ["--config", str(config)]) == "error: set --trainer.max_steps to a positive whole number"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume", ""], "error: --resume is empty: give a path, or leave the option out"),
        (["--init", ""], "error: --init is empty: give a path, or leave the option out"),
        (["--out_dir", ""], "error: --out_dir is empty: give a path, or leave the option out"),
        (["--trainer.max_steps", str(2**63 - 1)], f"error: --trainer.max_steps must be at most 1e+12, got {2**63 - 1}"),
        (["--config", "a" * 300 + ".yaml"], "error: cannot use " + "a" * 77 + "... as a config (File name too long)"),
    ],
    ids=["resume", "init", "out_dir", "max_steps", "config-name"],
)
def test_empty_paths_huge_step_counts_and_overlong_names_are_one_line(capsys, args, message):
    assert user_error(capsys, args).startswith(message)


def test_an_overlong_out_dir_is_one_line_and_leaves_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "made" / ("a" * 300) / "run"
    assert user_error(capsys, [*TINY, "--data", "x.txt", "--out_dir", str(out)]).endswith(
        "as the run folder (File name too long): choose another --out_dir"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "option"),
    [(["--model.n_embd", "64"], "--model.n_embd"), (["--model.n_head", "4"], "--model.n_head"),
     (["--model.bias", "false"], "--model.bias"), (["--tokenizer", "bpe:300"], "--tokenizer"),
     (["--model", '{"n_embd": 64, "n_head": 2, "n_layer": 2, "block_size": 32}'], "--model.n_embd")],
    ids=["n_embd", "n_head", "bias", "tokenizer", "model-group"],
)  # fmt: skip
def test_resume_refuses_what_it_cannot_apply_and_leaves_the_run_as_it_was(tmp_path, capsys, change, option):
    """It used to crash loading the weights (exit 1), or (n_head, tokenizer) silently keep the run's own."""
    from tests.helpers import train_in_process as train

    assert train(tmp_path, "run") == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").glob("*.ckpt")}
    capsys.readouterr()
    message = user_error(capsys, ["--resume", str(tmp_path / "run"), "--trainer.max_steps", "8", *change])
    assert message.startswith(f"error: {option} cannot change when resuming (the run has ")
    assert message.endswith("start a new run with --init RUN")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").glob("*.ckpt")} == before
    assert run(main, ["--resume", str(tmp_path / "run"), "--trainer.max_steps", "8", "--samples", "0", "--model.n_layer", "2",
                      "--model.dropout", "0.1"]) == 0  # the same shape, and dropout changes no weight  # fmt: skip


def test_print_config_on_resume_prints_the_runs_config_and_refuses_what_resume_refuses(tmp_path, capsys):
    from tests.helpers import train_in_process as train

    assert train(tmp_path, "run") == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parse(["--resume", str(tmp_path / "run"), "--print_config", "--trainer.max_steps", "9"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["model"]["n_embd"], printed["trainer"]["max_steps"]) == (32, 9)  # the run's width, the new length
    assert "cannot change when resuming" in user_error(
        capsys, ["--resume", str(tmp_path / "run"), "--model.n_embd", "64", "--print_config"]
    )


@pytest.mark.parametrize(
    "option", ["limit_train_batches 0", "limit_train_batches 1", "overfit_batches 1", "check_val_every_n_epoch 0",
               "max_epochs 3", "min_epochs 1"]
)  # fmt: skip
def test_trainer_options_counted_in_epochs_are_refused_before_training(capsys, option):
    """They crashed mid-fit (a ZeroDivisionError, a missing README.md) or meant nothing: there are no epochs."""
    name, value = option.split()
    message = user_error(capsys, ["--data", "x.txt", f"--trainer.{name}", value])
    assert message.startswith(f"error: --trainer.{name} does not apply here: training is one endless stream")


def test_epoch_options_at_values_that_change_nothing_are_accepted():
    for option in ("limit_train_batches 1.0", "overfit_batches 0", "check_val_every_n_epoch 1", "max_epochs -1"):
        name, value = option.split()
        assert parse(["--data", "x.txt", f"--trainer.{name}", value]).trainer[name] == yaml.safe_load(value)


@pytest.mark.parametrize("printing", [["--print_config"], ["--list_configs"], ["--help"], ["--help_all"]])
@pytest.mark.parametrize("stdout", ["full", "closed", "reader gone"])
def test_what_train_prints_instead_of_training_fails_in_one_line_or_ends_quietly(printing, stdout):
    # --print_config and --list_configs into a full disk or a closed stdout ended in a traceback and exit 1;
    # --help into a full disk ended with 0, the help lost (argparse drops a failed write).
    if stdout == "full" and not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    target = {"full": "> /dev/full", "closed": ">&-", "reader gone": "| true"}[stdout]
    done = subprocess.run(
        f"{sys.executable} -m minigpt train {' '.join(printing)} {target}", shell=True, capture_output=True, text=True,
        timeout=120, cwd=REPO,
    )  # fmt: skip
    if stdout == "reader gone":  # the pipeline's code is true's: the command must say nothing
        assert done.stderr == ""
        return
    expected = "No space left on device" if stdout == "full" else "it is closed"
    assert done.returncode == 2 and done.stderr == f"error: cannot write to standard output: {expected}\n", done.stderr


@pytest.mark.parametrize("option", ["--out_dir", "--cache_dir"])
def test_a_loop_of_links_is_named_as_one(tmp_path, capsys, option):
    # It said "File exists" for --out_dir and "a folder above it is a file" for --cache_dir.
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    data = "shakespeare" if option == "--cache_dir" else "x.txt"  # a builtin corpus goes into the cache folder
    err = user_error(capsys, ["--data", data, option, str(tmp_path / "a" / "sub")])
    assert f"({str(tmp_path / 'a')!r} is a loop of links)" in err and sorted(os.listdir(tmp_path)) == ["a", "b"]


@pytest.mark.parametrize("command", ["generate", "eval", "attention", "export"])
@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_every_commands_help_into_a_full_disk_or_a_closed_stdout_is_one_line(command, stdout):
    # argparse drops a failed write: --help into /dev/full ended with 0, the help lost; into a closed stdout it
    # went to standard error.
    if stdout == "full" and not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    target = "> /dev/full" if stdout == "full" else ">&-"
    done = subprocess.run(f"{sys.executable} -m minigpt {command} --help {target}", shell=True, capture_output=True,
                          text=True, timeout=120, cwd=REPO)  # fmt: skip
    expected = "No space left on device" if stdout == "full" else "it is closed"
    assert done.returncode == 2 and done.stderr == f"error: cannot write to standard output: {expected}\n", done.stderr
