"""minigpt.inspection.lens: the logit lens reads the residual stream after every block through the model's own
final LayerNorm and LM head; its last row is the model's output, and it is causal like the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minigpt import tokenizer
from minigpt.cli import run
from minigpt.cli.attention import main
from minigpt.errors import MiniGPTError
from minigpt.inspection.lens import logit_lens
from minigpt.inspection.report import token_strings
from minigpt.model import GPT, GPTConfig

IDS = [72, 101, 108, 108, 111, 32, 115, 104, 105, 110, 121, 32, 115, 117, 110, 33]
ENC = tokenizer.byte_tokenizer()


def full_distribution(probs: torch.Tensor, ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """The (..., vocab) distribution that top-k `probs` and `ids` (..., k = vocab) list in order."""
    return torch.zeros(*ids.shape[:-1], vocab).scatter(-1, ids, probs)


def test_the_lens_after_the_last_block_is_the_models_own_next_token_distribution(tiny_model: GPT) -> None:
    vocab = tiny_model.config.vocab_size
    lens = logit_lens(tiny_model, ENC, IDS, k=vocab)
    with torch.no_grad():
        expected = tiny_model(torch.tensor([IDS]))[0].softmax(dim=-1)  # (T, vocab)
    torch.testing.assert_close(full_distribution(lens.probs[-1], lens.ids[-1], vocab), expected, atol=1e-6, rtol=1e-5)


def test_the_lens_of_the_embeddings_is_the_head_applied_to_token_plus_position(tiny_model: GPT) -> None:
    vocab = tiny_model.config.vocab_size
    lens = logit_lens(tiny_model, ENC, IDS, k=vocab)
    t = tiny_model.transformer
    with torch.no_grad():
        stream = t.wte(torch.tensor(IDS)) + t.wpe(torch.arange(len(IDS)))  # (T, C)
        expected = (t.ln_f(stream) @ t.wte.weight.T).softmax(dim=-1)
    torch.testing.assert_close(full_distribution(lens.probs[0], lens.ids[0], vocab), expected, atol=1e-6, rtol=1e-5)


def test_the_lens_has_a_row_per_block_and_the_embeddings_with_k_ranked_tokens_per_position(tiny_model: GPT) -> None:
    lens = logit_lens(tiny_model, ENC, IDS, k=3)
    n_rows = tiny_model.config.n_layer + 1
    assert lens.probs.shape == lens.ids.shape == (n_rows, len(IDS), 3)
    assert lens.layers == ["embed", "block 0", "block 1"]
    assert lens.tokens == token_strings(ENC, IDS)
    assert lens.top[2][5] == token_strings(ENC, lens.ids[2, 5].tolist())
    assert (lens.probs[..., :-1] >= lens.probs[..., 1:]).all()  # most likely first
    assert ((lens.probs > 0) & (lens.probs <= 1)).all()


def test_a_later_token_does_not_change_the_lens_of_earlier_positions(tiny_model: GPT) -> None:
    changed = IDS[:10] + [ord("Z")] + IDS[11:]
    before, after = logit_lens(tiny_model, ENC, IDS), logit_lens(tiny_model, ENC, changed)
    torch.testing.assert_close(after.probs[:, :10], before.probs[:, :10], atol=1e-6, rtol=0)
    assert torch.equal(after.ids[:, :10], before.ids[:, :10])
    assert not torch.allclose(after.probs[:, 10], before.probs[:, 10])


def test_the_lens_leaves_the_model_as_it_was(tiny_model: GPT) -> None:
    tiny_model.train()
    logit_lens(tiny_model, ENC, IDS)
    assert tiny_model.training
    assert not any(m._forward_hooks for m in tiny_model.modules())


def test_the_table_shows_the_top_token_of_every_row_under_the_texts_tokens(tiny_model: GPT) -> None:
    lens = logit_lens(tiny_model, ENC, IDS[:4])
    lines = lens.table().splitlines()
    assert [line.split()[0] for line in lines] == ["token", "embed", "block", "block"]
    assert lines[0].split()[1:] == ["H", "e", "l", "l"]
    assert lines[-1].split()[2:] == [row[0].replace(" ", "·").replace("\n", "↵") for row in lens.top[-1]]


@pytest.mark.parametrize("k", [0, 258, 2.5])
def test_a_k_outside_the_vocabulary_is_a_one_line_error(tiny_model: GPT, k) -> None:
    with pytest.raises(MiniGPTError, match="k must be"):
        logit_lens(tiny_model, ENC, IDS, k=k)


def test_the_attention_command_writes_the_logit_lens_png_and_prints_the_last_position(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "maps"
    assert run(main, ["--ckpt", str(tiny_checkpoint), "--prompt", "Hello shiny sun!", "--out", str(out), "--logit_lens"]) == 0
    assert (out / "logit_lens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "logit lens at the last position ('!'), top next token after: embed" in capsys.readouterr().out


def test_without_logit_lens_the_command_writes_no_lens(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "maps"
    assert run(main, ["--ckpt", str(tiny_checkpoint), "--prompt", "Hello", "--out", str(out)]) == 0
    assert not (out / "logit_lens.png").exists()


def test_ids_that_name_no_token_show_as_unused_in_the_lens() -> None:
    """A vocabulary with unused ids (cl100k_base's layout): the lens ranks every id the model has, so it must
    show them rather than fail to decode them."""
    enc = tokenizer.from_dict(tokenizer.to_dict(tokenizer.byte_tokenizer()) | {"special_tokens": {tokenizer.EOT: 299}})
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    lens = logit_lens(model, enc, [104, 105], k=300)
    assert "<unused 256>" in {text for row in lens.top for position in row for text in position}
