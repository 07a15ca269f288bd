"""`minigpt export --out DEST` for every kind of destination: a folder appears complete or the user reads one line
(exit 2) and nothing that existed is touched; exports killed mid-write leave nothing that stays."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import pytest

from minigpt.cli import export, run
from minigpt.hf import export as hf_export
from tests.helpers import REPO, environment, replace_stopping_at

EXPORTED = {"README.md", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
AS_ROOT = os.geteuid() == 0


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` (links not followed) with its mode and size: what a refused export must keep."""
    found = {}
    for path in [folder, *folder.rglob("*")]:
        info = path.lstat()
        found[str(path)] = (info.st_mode, info.st_size if not stat.S_ISDIR(info.st_mode) else 0)
    return found


def export_cli(ckpt: Path, out: str | Path, capsys) -> tuple[int, str]:
    code = run(export.main, ["--ckpt", str(ckpt), "--out", str(out)])
    return code, capsys.readouterr().err


def under_a_file(tmp: Path) -> str:
    (tmp / "notes.txt").write_text("mine")
    return str(tmp / "notes.txt" / "model")


def dangling_link(tmp: Path) -> str:
    (tmp / "link").symlink_to(tmp / "gone")
    return str(tmp / "link")


def under_a_dangling_link(tmp: Path) -> str:
    (tmp / "link").symlink_to(tmp / "unmounted" / "disk")  # making link/model would make the link's target
    return str(tmp / "link" / "model")


def link_to_a_file(tmp: Path) -> str:
    (tmp / "notes.txt").write_text("mine")
    (tmp / "link").symlink_to(tmp / "notes.txt")
    return str(tmp / "link")


def read_only_parent(tmp: Path) -> str:
    (tmp / "locked").mkdir()
    (tmp / "locked").chmod(0o555)
    return str(tmp / "locked" / "model")


def immutable_parent(tmp: Path) -> str:
    (tmp / "frozen").mkdir()
    if subprocess.run(["chattr", "+i", str(tmp / "frozen")], capture_output=True, check=False).returncode != 0:
        pytest.skip("chattr +i is not available here")
    return str(tmp / "frozen" / "model")


def name_past_the_limit(tmp: Path) -> str:
    return str(tmp / ("m" * 300))


@pytest.fixture
def unfreeze(tmp_path):
    yield
    for folder in (tmp_path / "frozen", tmp_path / "locked"):
        if folder.exists():
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
            folder.chmod(0o755)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (under_a_file, "notes.txt is a file, not a folder"),
        (dangling_link, "is a link to"),
        (under_a_dangling_link, "unmounted/disk', which does not exist; pass a folder"),
        (link_to_a_file, "is a link to"),
        (lambda tmp: "/proc/minigpt-export", "cannot export to /proc/minigpt-export"),
        (name_past_the_limit, "longer than the file system allows"),
        pytest.param(read_only_parent, "locked", marks=pytest.mark.skipif(AS_ROOT, reason="root writes anywhere")),
        (immutable_parent, "frozen"),
    ],
    ids=["under-a-file", "dangling-link", "under-a-dangling-link", "link-to-a-file", "proc", "name-too-long", "read-only-parent", "immutable-parent"],
)
def test_an_unusable_destination_is_one_line_exit_2_and_nothing_changes(tmp_path, tiny_checkpoint, capsys, unfreeze, make, needle):
    out = make(tmp_path)
    before = tree(tmp_path)
    code, err = export_cli(tiny_checkpoint, out, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith((f"error: cannot export to {out}", f"error: cannot export to {out!r}"))
    assert needle in err, err
    assert tree(tmp_path) == before


def test_a_full_disk_is_one_line_exit_2_and_leaves_nothing(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    # What safetensors raises when the disk fills while it writes (seen on a 512 KiB tmpfs): its own error, not
    # an OSError, which went through as a traceback and exit 1.
    from safetensors import SafetensorError

    def full(state, path, metadata=None):
        Path(path).write_bytes(b"\0" * 100)  # part of the file was written
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(hf_export, "save_file", full)
    code, err = export_cli(tiny_checkpoint, tmp_path / "hf", capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"cannot export to {tmp_path / 'hf'}: No space left on device; free some space" in err
    assert os.listdir(tmp_path) == [tiny_checkpoint.name]  # neither the folder nor its temporary twin


def test_a_full_disk_under_new_folders_removes_the_folders_it_made(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(hf_export, "_write_folder", full)
    (tmp_path / "mine").mkdir()
    code, err = export_cli(tiny_checkpoint, tmp_path / "mine" / "a" / "b" / "hf", capsys)
    assert code == 2 and "No space left on device" in err
    assert list((tmp_path / "mine").iterdir()) == []


def test_an_empty_folder_of_yours_is_filled_and_keeps_its_mode_and_identity(tmp_path, tiny_checkpoint, capsys):
    # It was replaced by a new folder: a private (0700) folder became world-readable, and a mount point failed.
    out = tmp_path / "private"
    out.mkdir(mode=0o700)
    before = out.stat()
    code, err = export_cli(tiny_checkpoint, out, capsys)
    assert code == 0, err
    after = out.stat()
    assert (after.st_ino, after.st_dev, stat.S_IMODE(after.st_mode)) == (before.st_ino, before.st_dev, 0o700)
    assert {p.name for p in out.iterdir()} == EXPORTED
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_empty_mount_point_is_exported_into(tmp_path, tiny_checkpoint, capsys):
    """A container volume: it cannot be renamed over ("Device or resource busy"), so it is filled."""
    volume = tmp_path / "volume"
    volume.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(volume)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        code, err = export_cli(tiny_checkpoint, volume, capsys)
        assert code == 0, err
        assert {p.name for p in volume.iterdir()} == EXPORTED
    finally:
        subprocess.run(["umount", str(volume)], check=True)


def test_ctrl_c_during_the_fill_of_an_empty_folder_leaves_it_empty(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    """It left some of the files, and every later export into the folder was refused as not empty."""
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(hf_export.os, "replace", replace_stopping_at(3, KeyboardInterrupt()))
    code, err = export_cli(tiny_checkpoint, tmp_path / "out", capsys)
    assert code == 130 and err == "stopped by Ctrl-C\n"
    assert list((tmp_path / "out").iterdir()) == []


def test_an_export_killed_while_filling_an_empty_folder_is_undone_by_the_next(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".out.0123456789abcdef.export.tmp"  # what a killed export leaves: two files in, the rest not
    dead.mkdir()
    names = ["README.md", "tokenizer.json", "model.safetensors", "config.json"]
    (dead / "moving").write_text("".join(f"{name}\n" for name in names))
    for name in names[:2]:
        (out / name).write_text("half")
    for name in names[2:]:
        (dead / name).write_text("never moved")
    hf_export.export(tiny_checkpoint, out)
    assert {p.name for p in out.iterdir()} == EXPORTED and (out / "README.md").read_text() != "half"


def test_a_folder_holding_a_users_folder_named_like_a_temporary_one_is_not_empty(tmp_path, tiny_checkpoint, capsys):
    mine = tmp_path / "out" / ".backup.0123456789abcdef.export.tmp"
    mine.mkdir(parents=True)
    code, err = export_cli(tiny_checkpoint, tmp_path / "out", capsys)
    assert code == 2 and "not an empty folder" in err
    assert mine.is_dir()


def test_ctrl_c_removes_the_folders_it_made(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(hf_export, "_write_folder", mock.Mock(side_effect=KeyboardInterrupt))
    (tmp_path / "mine").mkdir()
    code, _ = export_cli(tiny_checkpoint, tmp_path / "mine" / "a" / "b" / "hf", capsys)
    assert code == 130 and list((tmp_path / "mine").iterdir()) == []


def test_an_empty_folder_that_cannot_be_written_is_named_itself(tmp_path, tiny_checkpoint, capsys):
    volume = tmp_path / "volume"
    volume.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(volume)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        code, err = export_cli(tiny_checkpoint, volume, capsys)
    finally:
        subprocess.run(["umount", str(volume)], check=True)
    assert code == 2 and f"cannot export to {volume}: {volume} cannot be written (Read-only file system)" in err


def test_config_json_is_the_last_file_to_arrive_in_an_existing_folder(tmp_path, tiny_checkpoint, monkeypatch):
    arrived, replace, out = [], os.replace, tmp_path / "out"

    def replace_noting_arrivals(src, dst):
        replace(src, dst)  # a file set aside first (none here: the folder is empty) raises before it is noted
        if Path(dst).parent == out:
            arrived.append(Path(dst).name)

    monkeypatch.setattr(hf_export.os, "replace", replace_noting_arrivals)
    out.mkdir()
    hf_export.export(tiny_checkpoint, tmp_path / "out")
    assert sorted(arrived) == sorted(EXPORTED) and arrived[-1] == "config.json"


def test_dot_is_refused_in_one_line_and_the_current_folder_stays(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, err = export_cli(tiny_checkpoint, ".", capsys)
    assert code == 2
    assert err.count("\n") == 1 and "is the current folder" in err, err
    assert Path.cwd().samefile(here) and list(here.iterdir()) == []


def test_a_link_to_an_empty_folder_exports_into_that_folder(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    code, _ = export_cli(tiny_checkpoint, tmp_path / "link", capsys)
    assert code == 0
    assert (tmp_path / "link").is_symlink() and {p.name for p in (tmp_path / "target").iterdir()} == EXPORTED


def test_a_name_of_250_characters_exports(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / ("m" * 250)
    code, err = export_cli(tiny_checkpoint, out, capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == EXPORTED
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_every_exported_file_gets_the_umask_mode(tmp_path, tiny_checkpoint):
    previous = os.umask(0o027)
    try:
        hf_export.export(tiny_checkpoint, tmp_path / "out")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert modes == dict.fromkeys(EXPORTED, 0o640)


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "empty-folder"])
def test_exports_racing_into_one_folder_leave_one_complete_folder_and_one_line_each(tmp_path, tiny_checkpoint, monkeypatch, existing):
    """All three pass the emptiness check and write before any renames: one wins, the others say so."""
    if existing:
        (tmp_path / "new" / "out").mkdir(parents=True)
    together = threading.Barrier(3, timeout=60)
    write = hf_export._write_folder

    def write_then_wait(*args):
        write(*args)
        together.wait()

    monkeypatch.setattr(hf_export, "_write_folder", write_then_wait)
    results: list[str] = []

    def one() -> None:
        try:
            hf_export.export(tiny_checkpoint, tmp_path / "new" / "out")
            results.append("ok")
        except hf_export.MiniGPTError as err:
            results.append(str(err))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("ok") == 1, results
    assert all("another export wrote it meanwhile" in r and "\n" not in r for r in results if r != "ok"), results
    assert {p.name for p in (tmp_path / "new" / "out").iterdir()} == EXPORTED
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["out"]


HANG_MID_EXPORT = """
import sys, time
from minigpt.hf import export

def write_then_hang(loaded, folder, name):
    (folder / "config.json").write_text("{}")
    print("writing", flush=True)
    time.sleep(600)

export._write_folder = write_then_hang
export.export(sys.argv[1], sys.argv[2])
"""


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_killed_exports_temporary_folder_is_swept_and_a_live_ones_is_kept(tmp_path, tiny_checkpoint):
    parent = tmp_path / "exports"
    child = subprocess.Popen(
        [sys.executable, "-c", HANG_MID_EXPORT, str(tiny_checkpoint), str(parent / "slow")],
        cwd=REPO, env=environment(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline() == "writing\n"
        live = temporaries(parent)
        assert len(live) == 1
        hf_export.export(tiny_checkpoint, parent / "beside")  # sweeps, but the running export's folder is its own
        assert temporaries(parent) == live
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    hf_export.export(tiny_checkpoint, parent / "after")
    assert temporaries(parent) == []
    assert sorted(p.name for p in parent.iterdir()) == ["after", "beside"]


def test_an_export_killed_at_random_moments_leaves_nothing_after_the_next_export(tmp_path, tiny_checkpoint):
    parent = tmp_path / "exports"
    command = [sys.executable, "-m", "minigpt", "export", "--ckpt", str(tiny_checkpoint)]
    for attempt in range(3):
        child = subprocess.Popen([*command, "--out", str(parent / f"k{attempt}")], cwd=REPO, env=environment())
        deadline = time.monotonic() + 60
        while not (parent.exists() and temporaries(parent)) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait()
    hf_export.export(tiny_checkpoint, parent / "after")
    assert temporaries(parent) == []
    for folder in parent.iterdir():  # a killed export either published its whole folder or nothing
        assert {p.name for p in folder.iterdir()} == EXPORTED
    shutil.rmtree(parent)


def test_a_refused_write_through_a_link_names_the_folder_that_refused(tmp_path):
    # A link into a folder this user cannot write: the message named the link's writable folder instead.
    (tmp_path / "locked").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "out").symlink_to(tmp_path / "locked" / "model")
    err = hf_export._write_error(tmp_path / "mine" / "out", PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    assert f"{tmp_path / 'locked'} cannot be written (Permission denied)" in str(err) and "mine " not in str(err)
