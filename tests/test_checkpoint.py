from pathlib import Path

import pytest
import torch

from minigpt import checkpoint
from minigpt.errors import MiniGPTError


def test_checkpoint_round_trips_model_and_tokenizer(tiny_checkpoint, tiny_model):
    loaded = checkpoint.load(tiny_checkpoint)
    idx = torch.randint(0, 257, (1, 10))
    assert torch.equal(loaded.model(idx), tiny_model(idx))
    assert not loaded.model.training
    text = "héllo <|endoftext|> wörld"
    assert loaded.tokenizer.decode(loaded.tokenizer.encode_ordinary(text)) == text


def test_run_folder_resolves_to_its_last_checkpoint(tiny_checkpoint):
    tiny_checkpoint.rename(tiny_checkpoint.parent / "last.ckpt")
    assert checkpoint.load(tiny_checkpoint.parent).model.config.n_layer == 2


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
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize(
    "content, message",
    [(None, "not found"), (b"not a checkpoint", "cannot read"), ({"state_dict": {}}, "not a minigpt checkpoint")],
)
def test_bad_checkpoints_are_user_errors(tmp_path: Path, content, message):
    path = tmp_path / "x.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(MiniGPTError, match=message):
        checkpoint.load(path)


def test_checkpoint_without_weights_is_a_user_error(tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["state_dict"] = {}
    torch.save(ckpt, tiny_checkpoint)
    with pytest.raises(MiniGPTError, match="no complete model weights"):
        checkpoint.load(tiny_checkpoint)
