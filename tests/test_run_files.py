"""A run's own files on a hostile file system: each written whole or not at all, checked before a resume trains, and
a failed write (a full disk, a file made a folder) one line and exit 2 that says what is saved. Found by attacking
training: each was a traceback and exit 1, some after steps were trained and lost."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from minigpt import checkpoint
from minigpt.cli import run
from minigpt.cli.train import main
from minigpt.training import run as training_run
from minigpt.training.callbacks import record
from minigpt.training.callbacks.checkpoints import SafeCheckpointIO
from tests.helpers import train_in_process as train


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and "Traceback" not in "\n".join(lines), lines
    return lines[-1]


def refuse_writing(monkeypatch, module, name: str, code: int = errno.ENOSPC) -> None:
    """`module.replace_text` fails for the file called `name` as the file system would."""
    real = module.replace_text

    def replace_text(path: Path, text: str) -> None:
        if path.name == name:
            raise OSError(code, os.strerror(code), str(path))
        real(path, text)

    monkeypatch.setattr(module, "replace_text", replace_text)


def checkpoints(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob("*.ckpt") if p.is_file()}


def test_a_full_disk_at_the_metrics_is_one_line_saying_what_is_saved(tmp_path, monkeypatch, capsys):
    refuse_writing(monkeypatch, record, "metrics.csv")
    assert train(tmp_path, "run") == 2
    message = error_line(capsys)
    assert message.startswith("error: training stopped: no space left on the device while writing ")
    assert "metrics.csv" in message and message.endswith(("nothing was saved", f"--resume {tmp_path / 'run'}"))
    for path in (tmp_path / "run").glob("*.ckpt"):
        checkpoint.read(path)


def test_a_model_card_that_cannot_be_written_is_one_line_and_leaves_no_half_card(tmp_path, monkeypatch, capsys):
    refuse_writing(monkeypatch, training_run, "README.md")
    assert train(tmp_path, "run") == 2
    assert error_line(capsys) == (
        f"error: the run is saved in {str(tmp_path / 'run')!r}, but not its model card: no space left on the device "
        f"while writing {str(tmp_path / 'run' / 'README.md')!r}: free some space"
    )
    assert step_of(tmp_path / "run" / "last.ckpt") == 6 and not (tmp_path / "run" / "README.md").exists()


def test_a_text_that_cannot_replace_its_file_leaves_no_temporary_file(tmp_path):
    (tmp_path / "metrics.csv").mkdir()
    with pytest.raises(IsADirectoryError):
        record.replace_text(tmp_path / "metrics.csv", "step\n1\n")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def break_metrics(run_dir: Path) -> None:
    (run_dir / "metrics.csv").write_text("step,train_loss\nabc,def\n")


def folder_instead(name: str):
    def change(run_dir: Path) -> None:
        path = run_dir / name
        path.unlink()
        path.mkdir()

    return change


def file_instead_of_tb(run_dir: Path) -> None:
    shutil.rmtree(run_dir / "tb")
    (run_dir / "tb").write_text("not a folder")


def tb_link_to_nothing(run_dir: Path) -> None:
    shutil.rmtree(run_dir / "tb")
    (run_dir / "tb").symlink_to(run_dir / "gone")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (break_metrics, "metrics.csv' is not a run's metrics (ValueError): move it away"),
        (folder_instead("metrics.csv"), "its metrics.csv is a folder, where the run writes its own"),
        (folder_instead("README.md"), "its README.md is a folder, where the run writes its own"),
        (folder_instead("loss.png"), "its loss.png is a folder, where the run writes its own"),
        (folder_instead("last.ckpt"), "its last.ckpt is a folder, where the run writes its own"),
        (file_instead_of_tb, "its tb is a file, where the run writes its own"),
        (tb_link_to_nothing, "its tb is a link to nothing, where the run writes its own"),
    ],
    ids=["metrics-garbage", "metrics-folder", "card-folder", "plot-folder", "last-folder", "tb-file", "tb-dangling"],
)
def test_a_resume_refuses_a_run_file_it_would_fail_on_before_training(tmp_path, capsys, damage, message):
    assert train(tmp_path, "run") == 0
    run_dir = tmp_path / "run"
    damage(run_dir)
    before = checkpoints(run_dir)
    capsys.readouterr()
    assert run(main, ["--resume", str(run_dir), "--trainer.max_steps", "9"]) == 2
    line = error_line(capsys)
    assert message in line and line.endswith("then resume again"), line
    assert checkpoints(run_dir) == before


@pytest.mark.parametrize("name", ["metrics.csv", "best.ckpt", "loss.png", "tb"])
def test_a_resume_refuses_an_immutable_run_file_before_training(tmp_path, capsys, name):
    """It trained, then failed at the save (steps lost), naming a temporary file that did not exist."""
    assert train(tmp_path, "run") == 0
    path = tmp_path / "run" / name
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        before = checkpoints(tmp_path / "run")
        capsys.readouterr()
        assert run(main, ["--resume", str(tmp_path / "run"), "--trainer.max_steps", "9"]) == 2
        assert f"its {name} cannot be written (Operation not permitted)" in error_line(capsys)
        assert checkpoints(tmp_path / "run") == before
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def test_what_is_saved_is_read_from_the_checkpoint_a_resume_would_continue(tmp_path):
    """A run resumed from its older best.ckpt that failed before writing said "step 15 is saved" (the step it
    started from) while last.ckpt held step 25."""
    for name, step in (("last.ckpt", 25), ("best.ckpt", 15)):
        checkpoint.atomic_save({"global_step": step}, tmp_path / name)
    trainer = SimpleNamespace(strategy=SimpleNamespace(checkpoint_io=SafeCheckpointIO()))
    assert training_run._kept(trainer, tmp_path) == f"step 25 is saved: continue with minigpt train --resume {tmp_path}"
    trainer.strategy.checkpoint_io.written[str(tmp_path / "last.ckpt")] = 30
    assert training_run._kept(trainer, tmp_path).startswith("step 30 is saved")


def test_a_resume_refuses_a_damaged_best_checkpoint_before_training(tmp_path, capsys):
    """It trained, then failed printing the samples from best.ckpt, whose message named best.ckpt as the remedy."""
    assert train(tmp_path, "run") == 0
    best = tmp_path / "run" / "best.ckpt"
    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 1
    best.write_bytes(bytes(data))
    before = checkpoints(tmp_path / "run")
    capsys.readouterr()
    assert run(main, ["--resume", str(tmp_path / "run"), "--trainer.max_steps", "9"]) == 2
    assert error_line(capsys) == (
        f"error: cannot resume: {str(best)!r} is damaged (it does not load, or fails its checksum): move it away "
        "(the run then keeps its best from here on), then resume again"
    )
    assert checkpoints(tmp_path / "run") == before


def test_a_damaged_checkpoint_names_the_other_checkpoint_of_its_run(tmp_path):
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    for path in (best, last):
        checkpoint.atomic_save({"weights": torch.arange(1000.0)}, path)
    data = bytearray(best.read_bytes())
    data[data.index(torch.arange(1000.0).numpy().tobytes()[400:408])] ^= 1  # a weight, not the file's structure
    best.write_bytes(bytes(data))
    with pytest.raises(checkpoint.MiniGPTError, match=f"is corrupt: .*; use {last} instead, or retrain$"):
        checkpoint.read_plain(best)
    last.unlink()
    with pytest.raises(checkpoint.MiniGPTError, match="; use another checkpoint, or retrain$"):
        checkpoint.read_plain(best)


def test_a_config_yaml_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    refuse_writing(monkeypatch, training_run, "config.yaml")
    assert train(tmp_path, "run") == 2
    assert error_line(capsys) == (
        f"error: no space left on the device while writing {str(tmp_path / 'run' / 'config.yaml')!r}: free some space; "
        "nothing was saved"
    )
    assert not (tmp_path / "run").exists()


def test_an_out_dir_spelled_as_the_runs_config_names_its_first_folder_is_still_refused_elsewhere(tmp_path, capsys):
    """A copy of a run resumed with --out_dir naming the original (the string its config.yaml holds) trained the copy."""
    assert train(tmp_path, "run") == 0
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    capsys.readouterr()
    assert run(main, ["--resume", str(tmp_path / "copy"), "--out_dir", str(tmp_path / "run")]) == 2
    assert "--out_dir cannot change when resuming" in error_line(capsys)
    assert run(main, ["--resume", str(tmp_path / "copy"), "--trainer.max_steps", "7"]) == 0  # a moved run resumes


def test_out_dir_with_resume_is_refused_not_dropped(tmp_path, capsys):
    """The resumed run was trained on, in its own folder, and the other folder never made."""
    assert train(tmp_path, "run") == 0
    before = checkpoints(tmp_path / "run")
    capsys.readouterr()
    assert run(main, ["--resume", str(tmp_path / "run"), "--out_dir", str(tmp_path / "copy"), "--trainer.max_steps", "9"]) == 2
    assert error_line(capsys) == (
        f"error: --out_dir cannot change when resuming: the run goes on in its own folder {str(tmp_path / 'run')!r}; "
        f"to train a copy of it, copy that folder to {str(tmp_path / 'copy')!r} and resume the copy"
    )
    assert checkpoints(tmp_path / "run") == before and not (tmp_path / "copy").exists()
    assert run(main, ["--resume", str(tmp_path / "run"), "--out_dir", str(tmp_path / "run"), "--trainer.max_steps", "7"]) == 0
    assert step_of(tmp_path / "run" / "last.ckpt") == 7


def test_a_checkpoint_write_cut_short_does_not_count_as_saved(tmp_path, monkeypatch):
    """A second Ctrl-C during the stop's save left the step before on disk, and the message named the newer one."""
    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 5}, path)

    def cut_short(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 7}, path)
    assert io.written == {str(path): 5}


def test_the_first_checkpoint_on_a_full_disk_does_not_claim_an_earlier_one_is_kept(tmp_path, monkeypatch):
    def full_disk(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(checkpoint.DiskFull) as err:
        checkpoint.atomic_save({"step": 1}, tmp_path / "best.ckpt")
    assert str(err.value) == f"no space left on the device while writing {tmp_path / 'best.ckpt'}: free some space"


def test_tensorboards_writer_thread_does_not_print_the_error_training_raises_again(monkeypatch):
    """A full disk in TensorBoard's writer thread printed a traceback beside the one line of the same error."""
    writer_thread = type("_AsyncWriterThread", (threading.Thread,), {})
    shown = []
    monkeypatch.setattr(threading, "excepthook", lambda args: shown.append(type(args.thread).__name__))

    def fail() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with training_run.process_state_kept():
        for kind in (writer_thread, threading.Thread):
            thread = kind(target=fail)
            thread.start()
            thread.join()
    assert shown == ["Thread"]


def test_a_ctrl_c_at_the_final_samples_says_the_run_is_saved_and_a_resume_finishes_it(tmp_path, monkeypatch, capsys):
    """It was a bare "stopped by Ctrl-C" (from Python, an empty KeyboardInterrupt) with no word of what was saved."""

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "print_samples", interrupted)
    assert train(tmp_path, "run") == 130
    assert capsys.readouterr().err.strip() == (
        "stopped by Ctrl-C: the run is trained and saved, but not its samples and model card: "
        f"minigpt train --resume {tmp_path / 'run'} writes them"
    )
    monkeypatch.undo()
    assert not (tmp_path / "run" / "README.md").exists()
    assert run(main, ["--resume", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "README.md").is_file() and step_of(tmp_path / "run" / "last.ckpt") == 6
