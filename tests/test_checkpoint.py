import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt import checkpoint
from minigpt.errors import MiniGPTError
from tests.helpers import REPO


def test_checkpoint_round_trips_model_and_tokenizer(tiny_checkpoint, tiny_model):
    loaded = checkpoint.load(tiny_checkpoint)
    idx = torch.randint(0, 257, (1, 10))
    assert torch.equal(loaded.model(idx), tiny_model(idx))
    assert not loaded.model.training
    text = "héllo <|endoftext|> wörld"
    assert loaded.tokenizer.decode(loaded.tokenizer.encode_ordinary(text)) == text


def test_a_run_folder_with_only_a_last_checkpoint_loads_it(tiny_checkpoint):
    tiny_checkpoint.rename(tiny_checkpoint.parent / "last.ckpt")
    assert checkpoint.load(tiny_checkpoint.parent).model.config.n_layer == 2


def test_a_run_folder_means_its_best_checkpoint_for_use_and_its_last_for_resuming(tmp_path):
    for name in ("last.ckpt", "best.ckpt"):
        (tmp_path / name).touch()
    assert checkpoint.file_to_use(tmp_path) == tmp_path / "best.ckpt"
    assert checkpoint.file_to_resume(tmp_path) == tmp_path / "last.ckpt"


@pytest.mark.parametrize("only", ["last.ckpt", "best.ckpt"])
def test_a_run_folder_with_one_checkpoint_means_it_for_use_and_for_resuming(tmp_path, only):
    (tmp_path / only).touch()
    assert checkpoint.file_to_use(tmp_path) == checkpoint.file_to_resume(tmp_path) == tmp_path / only


def test_a_checkpoint_file_means_itself_for_use_and_for_resuming(tiny_checkpoint):
    assert checkpoint.file_to_use(tiny_checkpoint) == checkpoint.file_to_resume(tiny_checkpoint) == tiny_checkpoint


def test_loading_a_run_folder_loads_its_best_checkpoint(tiny_checkpoint):
    run = tiny_checkpoint.parent
    rewrite(tiny_checkpoint, lambda c: c[checkpoint.PAYLOAD_KEY].update(train_config={"val_fraction": 0.2}))
    tiny_checkpoint.rename(run / "best.ckpt")
    last = run / "last.ckpt"
    last.write_bytes((run / "best.ckpt").read_bytes())
    rewrite(last, lambda c: c[checkpoint.PAYLOAD_KEY].update(train_config={"val_fraction": 0.3}))
    assert checkpoint.load(run).val_fraction == 0.2


def test_a_loaded_checkpoint_carries_its_payload(tiny_checkpoint, tiny_model):
    loaded = checkpoint.load(tiny_checkpoint)
    assert loaded.payload.model_config == tiny_model.config and loaded.payload.tokenizer is loaded.tokenizer


def test_a_model_without_a_payload_has_the_default_val_fraction(tiny_model):
    from minigpt.data.prepare import DEFAULT_VAL_FRACTION
    from minigpt.tokenizer import byte_tokenizer

    assert checkpoint.Loaded(tiny_model, byte_tokenizer()).val_fraction == DEFAULT_VAL_FRACTION


def test_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    checkpoint.atomic_save({"step": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        checkpoint.atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_full_disk_is_a_one_line_error_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    checkpoint.atomic_save({"step": 1}, path)

    def full_disk(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda folder: _Usage(free=0))
    with pytest.raises(MiniGPTError, match="no space left .* previous checkpoint there is kept"):
        checkpoint.atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1


class _Usage:
    def __init__(self, free: int) -> None:
        self.free = free


def test_enospc_is_recognised_whatever_the_free_space(tmp_path, monkeypatch):
    def enospc(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", enospc)
    with pytest.raises(MiniGPTError, match="no space left"):
        checkpoint.atomic_save({"step": 2}, tmp_path / "x.ckpt")


@pytest.mark.parametrize(
    "content, message",
    [(None, "not found"), (b"not a checkpoint", "is corrupt"), ({"state_dict": {}}, "not a minigpt checkpoint")],
)
def test_bad_checkpoints_are_user_errors(tmp_path: Path, content, message):
    path = tmp_path / "x.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(MiniGPTError, match=message):
        checkpoint.load(path)


def rewrite(path: Path, change) -> None:
    """Change a checkpoint as a crafted file would, with a correct checksum (so only validation can catch it)."""
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    checkpoint.atomic_save(ckpt, path)


def test_every_save_stores_a_checksum_of_the_contents(tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    assert ckpt[checkpoint.CHECKSUM_KEY] == checkpoint.checksum(ckpt)
    ckpt["state_dict"]["model.transformer.wte.weight"][0, 0] += 1e-3
    assert ckpt[checkpoint.CHECKSUM_KEY] != checkpoint.checksum(ckpt)


def flip_bytes(path: Path, member: str, count: int = 16) -> None:
    """Invert `count` bytes inside one stored member of the checkpoint's zip, as a failing disk would."""
    import struct
    import zipfile

    info = next(i for i in zipfile.ZipFile(path).infolist() if i.filename.endswith(member))
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + min(64, info.file_size - count)
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_a_tensor_are_reported_as_corruption(tiny_checkpoint):
    flip_bytes(tiny_checkpoint, "data/0")
    with pytest.raises(MiniGPTError, match="is corrupt: its contents do not match the checksum"):
        checkpoint.load(tiny_checkpoint)


def test_a_changed_payload_value_is_reported_as_corruption(tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt[checkpoint.PAYLOAD_KEY]["train_config"] = {"seed": 2}
    torch.save(ckpt, tiny_checkpoint)  # a plain torch.save keeps the old checksum
    with pytest.raises(MiniGPTError, match="corrupt"):
        checkpoint.load(tiny_checkpoint)


def test_checkpoint_without_a_checksum_still_loads_with_a_warning(tiny_checkpoint, caplog):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    del ckpt[checkpoint.CHECKSUM_KEY]
    torch.save(ckpt, tiny_checkpoint)
    with caplog.at_level("WARNING"):
        checkpoint.load(tiny_checkpoint)
    assert "no checksum" in caplog.text


def _model_config(change):
    return lambda ckpt: change(ckpt[checkpoint.PAYLOAD_KEY]["model_config"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c[checkpoint.PAYLOAD_KEY].pop("model_config"), "lacks model_config"),
        (lambda c: c[checkpoint.PAYLOAD_KEY].pop("tokenizer"), "lacks model_config or tokenizer"),
        (lambda c: c.update({checkpoint.PAYLOAD_KEY: [1, 2]}), "lacks model_config"),
        (_model_config(lambda m: m.update(colour="red")), "unknown key 'colour'"),
        (_model_config(lambda m: m.pop("n_head")), "lacks 'n_head'"),
        (_model_config(lambda m: m.update(n_head=3)), "divisible"),
        (_model_config(lambda m: m.update(block_size=-4)), "block_size must be a positive integer"),
        (_model_config(lambda m: m.update(n_layer="2")), "n_layer must be a positive integer"),
        (_model_config(lambda m: m.update(vocab_size=2**30, n_embd=2**12)), "has shape"),  # 16 TB of embedding
        (_model_config(lambda m: m.update(n_layer=3)), "model_config declares n_layer=3 but the weights hold 2 layers"),
        (lambda c: c["state_dict"].pop("model.transformer.h.1.ln_2.bias"), "weight model.transformer.h.1.ln_2.bias is missing"),
        (lambda c: c["state_dict"].update({"model.extra": torch.zeros(1)}), "does not belong"),
        (lambda c: c[checkpoint.PAYLOAD_KEY]["tokenizer"].update(pattern="(unclosed"), "not a valid regular expression"),
        (lambda c: c[checkpoint.PAYLOAD_KEY]["tokenizer"].update(ranks=c[checkpoint.PAYLOAD_KEY]["tokenizer"]["ranks"][:200]), "lack some of the 256"),
        (lambda c: c[checkpoint.PAYLOAD_KEY]["tokenizer"]["ranks"].append(b"a"), "repeat a token"),
        (lambda c: c[checkpoint.PAYLOAD_KEY]["tokenizer"]["special_tokens"].update({"<|x|>": 256}), "must be distinct"),
        (lambda c: c[checkpoint.PAYLOAD_KEY]["tokenizer"]["special_tokens"].update({"<|x|>": 257}), "tokenizer has 258 tokens"),
        (lambda c: c[checkpoint.PAYLOAD_KEY]["tokenizer"]["special_tokens"].update({"<|x|>": 2**31}), "distinct and from 0"),
    ],
    ids=[
        "no-model-config", "no-tokenizer", "payload-is-a-list", "unknown-key", "missing-key", "n_head-not-dividing",
        "negative-block-size", "string-size", "16TB-embedding", "more-layers-than-weights", "missing-weight", "extra-weight",
        "bad-pattern", "ranks-short", "duplicate-rank", "special-reusing-an-id", "vocab-mismatch", "special-id-past-int32",
    ],
)  # fmt: skip
def test_crafted_payloads_are_one_line_errors(tiny_checkpoint, change, message):
    rewrite(tiny_checkpoint, change)
    with pytest.raises(MiniGPTError, match=message) as err:
        checkpoint.load(tiny_checkpoint)
    assert "\n" not in str(err.value)


def test_a_config_whose_n_head_was_changed_does_not_load_as_another_model(tiny_checkpoint):
    def other_heads(ckpt):
        payload = ckpt[checkpoint.PAYLOAD_KEY]
        payload["train_config"] = {"model": dict(payload["model_config"])}
        payload["model_config"]["n_head"] = 4  # divides the width: every weight keeps its shape

    rewrite(tiny_checkpoint, other_heads)
    with pytest.raises(MiniGPTError, match="n_head=4 but its training config says 2"):
        checkpoint.load(tiny_checkpoint)


def test_non_finite_weights_are_refused(tiny_checkpoint):
    rewrite(tiny_checkpoint, lambda c: c["state_dict"]["model.transformer.h.0.ln_1.weight"].fill_(float("nan")))
    with pytest.raises(MiniGPTError, match="NaN or infinite weights"):
        checkpoint.load(tiny_checkpoint)


def test_checkpoint_without_weights_is_a_user_error(tiny_checkpoint):
    rewrite(tiny_checkpoint, lambda c: c.update(state_dict={}))
    with pytest.raises(MiniGPTError, match="the weights hold 0 layers"):
        checkpoint.load(tiny_checkpoint)


@pytest.mark.parametrize(
    "command",
    [
        ["generate.py", "--prompt", "hi", "--max-new-tokens", "2"],
        ["-m", "minigpt.cli.attention", "--prompt", "hi", "--out", "maps"],
        ["train.py", "--resume"],
    ],
    ids=["generate", "attention", "train-resume"],
)
def test_a_pickle_with_code_never_runs_it_even_when_torch_is_told_to_allow_it(tmp_path, tiny_checkpoint, command):
    """A crafted checkpoint whose pickle calls os.system: one line, exit 2, and the command never ran."""
    marker = tmp_path / "pwned"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("trainer:\n  max_steps: 4\n")
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["evil"] = _Evil(str(marker))
    torch.save(ckpt, tmp_path / "run" / "last.ckpt")
    args = [a if not a.endswith(".py") else str(REPO / a) for a in command]
    where = ["--ckpt", str(tmp_path / "run")] if command[0] != "train.py" else [str(tmp_path / "run")]
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    done = subprocess.run([sys.executable, *args, *where], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "refusing to load" in done.stderr
    assert not marker.exists()


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_plain_pickle_is_refused_in_one_line_without_torchs_protocol_warning(tmp_path):
    """A pickle of protocol 4 (pickle's default) drew torch's two-line UserWarning before the refusal."""
    import pickle

    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    done = subprocess.run(
        [sys.executable, "-m", "minigpt", "generate", "--ckpt", str(tmp_path / "model.pkl"), "--prompt", "hi"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
