"""minigpt.inspection.patching: the share of a clean-vs-corrupt difference that each activation restores, checked
on a random tiny model against what must hold whatever the weights (the induction model of
tests/test_induction.py checks that it finds the right heads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minigpt import tokenizer
from minigpt.cli import run
from minigpt.cli.attention import main
from minigpt.errors import MiniGPTError
from minigpt.inspection.patching import Site, activation_patching, restored
from minigpt.model import GPT

ENC = tokenizer.byte_tokenizer()
CLEAN = list(b"the cat sat on the mat")
CORRUPT = list(b"the dog sat on the mat")  # positions 4-6 differ
ANSWER, WRONG = ord("."), ord("!")
TOLERANCE = 1e-4  # a batched run of the model differs from a single one by float rounding


def test_patching_a_whole_residual_stream_restores_everything(tiny_model: GPT) -> None:
    sites = [Site("residual", n, None) for n in range(tiny_model.config.n_layer + 1)]
    shares, _, _ = restored(tiny_model, CLEAN, CORRUPT, ANSWER, WRONG, sites)
    torch.testing.assert_close(shares, torch.ones(len(sites), dtype=torch.float64), atol=TOLERANCE, rtol=0)


def test_patching_positions_before_the_change_restores_nothing(tiny_model: GPT) -> None:
    patching = activation_patching(tiny_model, ENC, CLEAN, CORRUPT, ANSWER, WRONG)
    torch.testing.assert_close(patching.residual[:, :4], torch.zeros(3, 4, dtype=torch.float64), atol=TOLERANCE, rtol=0)


def test_after_the_last_block_only_the_last_position_counts(tiny_model: GPT) -> None:
    last = activation_patching(tiny_model, ENC, CLEAN, CORRUPT, ANSWER, WRONG).residual[-1]
    torch.testing.assert_close(last[-1].item(), 1.0, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(last[:-1], torch.zeros(len(CLEAN) - 1, dtype=torch.float64), atol=TOLERANCE, rtol=0)


def test_the_embeddings_restore_everything_where_the_token_changed_and_nothing_elsewhere(tiny_model: GPT) -> None:
    """Only the corrupted tokens differ at the start; swapping one back restores its share, the others none."""
    embed = activation_patching(tiny_model, ENC, CLEAN, CORRUPT, ANSWER, WRONG).residual[0]
    unchanged = [i for i, (a, b) in enumerate(zip(CLEAN, CORRUPT)) if a == b]
    torch.testing.assert_close(embed[unchanged], torch.zeros(len(unchanged), dtype=torch.float64), atol=TOLERANCE, rtol=0)


def metric(model: GPT, ids: list[int], layer: int | None = None, head: int | None = None, clean: torch.Tensor | None = None) -> float:
    """logit(ANSWER) - logit(WRONG) at the last position, optionally with one head's c_proj input slice replaced."""
    hd = model.config.n_embd // model.config.n_head

    def swap(module, args):
        y = args[0].clone()
        y[..., head * hd : (head + 1) * hd] = clean[..., head * hd : (head + 1) * hd]
        return (y,)

    handle = model.transformer.h[layer].attn.c_proj.register_forward_pre_hook(swap) if layer is not None else None
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, -1].double()
    if handle:
        handle.remove()
    return float(logits[ANSWER] - logits[WRONG])


def test_a_heads_share_is_what_the_corrupted_run_gives_with_that_heads_clean_output(tiny_model: GPT) -> None:
    caught = {}
    handle = tiny_model.transformer.h[1].attn.c_proj.register_forward_pre_hook(lambda m, a: caught.setdefault("y", a[0]))
    clean = metric(tiny_model, CLEAN)
    handle.remove()
    corrupt = metric(tiny_model, CORRUPT)
    patched = metric(tiny_model, CORRUPT, layer=1, head=0, clean=caught["y"])
    patching = activation_patching(tiny_model, ENC, CLEAN, CORRUPT, ANSWER, WRONG)
    assert patching.clean == pytest.approx(clean, abs=1e-5) and patching.corrupt == pytest.approx(corrupt, abs=1e-5)
    assert patching.heads[1, 0].item() == pytest.approx((patched - corrupt) / (clean - corrupt), abs=TOLERANCE)
    assert patching.heads.shape == (2, 2) and patching.residual.shape == (3, len(CLEAN))


def test_without_a_wrong_token_the_metric_is_the_answer_logit_minus_the_mean_logit(tiny_model: GPT) -> None:
    patching = activation_patching(tiny_model, ENC, CLEAN, CORRUPT, ANSWER)
    with torch.no_grad():
        last = tiny_model(torch.tensor([CLEAN]))[0, -1].double()
    assert patching.clean == pytest.approx(float(last[ANSWER] - last.mean()), abs=1e-5)
    assert patching.metric == "logit('.') - mean logit at the last position"
    assert patching.wrong is None and patching.answer == "."


def test_patching_leaves_the_model_without_hooks_and_in_its_mode(tiny_model: GPT) -> None:
    tiny_model.train()
    activation_patching(tiny_model, ENC, CLEAN, CORRUPT, ANSWER, WRONG)
    assert tiny_model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_model.modules())


@pytest.mark.parametrize(
    "corrupt, answer, wrong, needle",
    [
        (CORRUPT[:-1], ANSWER, WRONG, "the clean text has 22 tokens and the corrupted one 21"),
        (CLEAN, ANSWER, WRONG, "give the answer the same score"),
        (CORRUPT, ANSWER, ANSWER, "the answer and the wrong token are the same"),
        (CORRUPT, 300, None, "outside the vocabulary"),
    ],
)
def test_texts_that_cannot_be_compared_are_one_line_errors(tiny_model: GPT, corrupt, answer, wrong, needle) -> None:
    with pytest.raises(MiniGPTError, match=needle) as caught:
        activation_patching(tiny_model, ENC, CLEAN, corrupt, answer, wrong)
    assert "\n" not in str(caught.value)


def command(checkpoint: Path, out: Path, *extra: str) -> int:
    return run(main, ["--ckpt", str(checkpoint), "--prompt", "the cat sat", "--out", str(out), *extra])


def test_the_attention_command_adds_patching_to_heads_json_and_draws_it(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    assert command(tiny_checkpoint, tmp_path / "plain") == 0
    out = tmp_path / "maps"
    assert command(tiny_checkpoint, out, "--corrupt", "the dog sat", "--answer", ".", "--wrong", "!") == 0
    plain, heads = (json.loads((folder / "heads.json").read_text()) for folder in (tmp_path / "plain", out))
    same = {k: v for k, v in heads.items() if k not in ("patching", "files")}
    assert same == {k: v for k, v in plain.items() if k != "files"}  # the existing keys as they were
    assert heads["files"] == [*plain["files"], "patching_heads.png", "patching_residual.png"]
    patching = heads["patching"]
    assert patching["metric"] == "logit('.') - logit('!') at the last position"
    assert len(patching["heads"]) == 2 and len(patching["residual"]) == 3 and len(patching["residual"][0]) == 11
    assert patching["residual"][-1][-1] == pytest.approx(1.0, abs=TOLERANCE)
    for name in ("patching_heads.png", "patching_residual.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "activation patching, share of logit('.') - logit('!') at the last position restored" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--corrupt", "the dog sat"], "--corrupt needs --answer"),
        (["--answer", "."], "--answer is the token measured when patching: add --corrupt"),
        (["--corrupt", "the dog sat", "--answer", ".", "--wrong", "no"], "the wrong 'no' is 2 tokens"),
        (["--corrupt", "the dogs sat", "--answer", "."], "the clean text has 11 tokens and the corrupted one 12"),
        # A prompt past the context: the maps' "keeping the last N" warning came first, then the error
        (["--prompt", "x" * 300, "--corrupt", "y" * 300, "--answer", "."], "--prompt has 300 tokens; patching reads at most"),
    ],
)
def test_patching_options_that_do_not_fit_are_one_line_errors_and_write_nothing(
    tiny_checkpoint: Path, tmp_path: Path, capsys, extra, needle
) -> None:
    assert command(tiny_checkpoint, tmp_path / "maps", *extra) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "maps").exists()
