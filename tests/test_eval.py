"""Held-out evaluation: sliding-window scoring, the shard layout of the text, and the `minigpt eval` command."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minigpt import checkpoint, tokenizer
from minigpt.cli import run
from minigpt.cli.eval import main
from minigpt.data.prepare import prepare
from minigpt.errors import MiniGPTError
from minigpt.evaluate import corpus_tokens, score, windows
from minigpt.model import GPT
from minigpt.payload import MODEL_PREFIX, Payload

LINE = re.compile(
    r"eval (?P<ckpt>.+) on (?P<data>.+) \((?P<split>\w+)\): (?P<tokens>[\d,]+) tokens, (?P<bytes>[\d,]+) bytes: "
    r"loss (?P<loss>[\d.]+) nats/token, (?P<bpb>[\d.]+) bits/byte, perplexity (?P<ppl>[\d.]+)\n"
)
TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(40))


def cli(argv: list[str]) -> tuple[int, str, str]:
    """Run the command in-process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run(main, argv)
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def parse(out: str) -> dict[str, str]:
    match = LINE.fullmatch(out)
    assert match, out
    return match.groupdict()


def number(text: str) -> int:
    return int(text.replace(",", ""))


def assert_one_line_error(code: int, out: str, err: str) -> None:
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err


def context_start(p: int, n: int, block_size: int, stride: int) -> int:
    """Where the context of target `p` starts: the first window (moved on by `stride`, the last one pulled back to
    end on the last id) whose targets reach `p`."""
    length = min(block_size, n - 1)
    k = 0
    while min(k * stride, n - 1 - length) + length < p:
        k += 1
    return min(k * stride, n - 1 - length)


def brute_force_nats(model: GPT, ids: torch.Tensor, stride: int) -> float:
    """Each target predicted on its own, from the context the sliding window gives it."""
    n, total = ids.numel(), 0.0
    with torch.no_grad():
        for p in range(1, n):
            context = ids[context_start(p, n, model.config.block_size, stride) : p]
            logits = model(context[None])[0, -1]
            total += F.cross_entropy(logits[None], ids[p : p + 1]).item()
    return total


def random_ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 257, (n,), generator=torch.Generator().manual_seed(seed))


def small_checkpoint(path: Path, model: GPT, train_config: dict) -> Path:
    """A checkpoint like the `tiny_checkpoint` fixture, with a training config of our choosing."""
    payload = Payload(model.config, tokenizer.byte_tokenizer(), train_config).to_dict()
    state = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    checkpoint.atomic_save({"state_dict": state, checkpoint.PAYLOAD_KEY: payload}, path)
    return path


# ---- the sliding window ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [10, 32, 33, 150])  # shorter than, equal to (as inputs and as targets), longer than 32
@pytest.mark.parametrize("stride", [1, 5, 16, 31, 32])
def test_sliding_window_loss_equals_each_token_predicted_alone(tiny_model: GPT, n: int, stride: int) -> None:
    ids = random_ids(n)

    result = score(tiny_model, ids, stride=stride, batch_size=3)

    assert result.tokens == n - 1
    assert result.nats == pytest.approx(brute_force_nats(tiny_model, ids, stride), rel=1e-5)


@pytest.mark.parametrize("n", [2, 5, 32, 33, 34, 64, 65, 100, 1000])
@pytest.mark.parametrize("stride", [1, 2, 7, 15, 16, 31, 32])
def test_windows_score_every_target_once_with_enough_context(n: int, stride: int) -> None:
    block_size = 32
    scored = []
    for start, new in windows(n, block_size, stride):
        length = min(block_size, n - 1)
        assert 0 <= start and start + length <= n - 1 and 1 <= new <= length
        targets = range(start + length - new + 1, start + length + 1)
        if start > 0:  # every window but the first keeps at least block_size - stride + 1 ids of context
            assert all(p - start >= block_size - stride + 1 for p in targets)
        scored += targets

    assert scored == list(range(1, n))


def test_batch_size_does_not_change_the_result(tiny_model: GPT) -> None:
    ids = random_ids(300)

    one, many = score(tiny_model, ids, batch_size=1), score(tiny_model, ids, batch_size=64)

    assert one.tokens == many.tokens == 299
    assert one.nats == pytest.approx(many.nats, rel=1e-6)


def test_a_huge_batch_is_cut_to_bound_the_logits_memory_and_scores_the_same(tiny_model: GPT, monkeypatch) -> None:
    """--batch_size 100000 took 7 GB for a tiny model; each forward pass now holds at most MAX_BATCH_LOGITS logits."""
    from minigpt import evaluate

    ids, sizes = random_ids(300), []
    forward = tiny_model.forward
    monkeypatch.setattr(tiny_model, "forward", lambda rows: sizes.append(rows.shape[0]) or forward(rows))
    expected = score(tiny_model, ids, batch_size=1).nats
    sizes.clear()
    window = tiny_model.config.block_size * tiny_model.config.vocab_size
    monkeypatch.setattr(evaluate, "MAX_BATCH_LOGITS", 3 * window)
    assert score(tiny_model, ids, batch_size=100_000).nats == pytest.approx(expected, rel=1e-6)
    assert max(sizes) == 3 and len(sizes) > 1


def test_default_stride_is_half_the_context(tiny_model: GPT) -> None:
    ids = random_ids(100)

    assert score(tiny_model, ids).nats == score(tiny_model, ids, stride=16).nats


def test_two_ids_score_one_token(tiny_model: GPT) -> None:
    result = score(tiny_model, random_ids(2))

    assert result.tokens == 1 and result.loss == result.nats > 0


def test_metrics_follow_from_the_summed_loss() -> None:
    from minigpt.evaluate import Score

    result = Score(tokens=100, nats=150.0)

    assert result.loss == 1.5
    assert result.perplexity == pytest.approx(math.exp(1.5))
    assert result.bits_per_byte(300) == pytest.approx(150.0 / 300 / math.log(2))


def test_the_model_is_scored_in_eval_mode_and_left_as_it_was(tiny_model: GPT) -> None:
    tiny_model.train()
    score(tiny_model, random_ids(40))

    assert tiny_model.training


@pytest.mark.parametrize(("ids", "stride", "batch_size", "match"), [
    (random_ids(1), None, 8, "nothing to predict"),
    (random_ids(50), 0, 8, "stride 0 is out of range"),
    (random_ids(50), 33, 8, "stride 33 is out of range.*block_size 32"),
    (random_ids(50), 16, 0, "batch size 0"),
])  # fmt: skip
def test_bad_inputs_are_user_errors(tiny_model: GPT, ids, stride, batch_size, match) -> None:
    with pytest.raises(MiniGPTError, match=match):
        score(tiny_model, ids, stride=stride, batch_size=batch_size)


# ---- the text: the layout of a prepared shard -----------------------------------------------------


@pytest.mark.parametrize("documents", [1, 12])  # the character split of one text, the every-k-th-document split
def test_split_tokens_are_the_shards_that_training_wrote(tmp_path: Path, documents: int) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(documents):
        (folder / f"{i:02}.txt").write_text(f"Document {i}, café.\n" + TEXT[: 200 + 30 * i], encoding="utf-8")
    prepared = prepare(str(folder), "bytes", tmp_path / "cache", 0.25, progress=False)
    enc = tokenizer.byte_tokenizer()

    for split in ("train", "val"):
        tokens = corpus_tokens(str(folder), enc, split, 0.25, tmp_path / "cache")
        shard = np.fromfile(prepared.dir / f"{split}.bin", dtype=prepared.meta.dtype)
        assert tokens.ids.tolist() == shard.tolist()
        assert tokens.n_bytes == prepared.meta.split(split).n_bytes


def test_all_is_every_document_after_an_end_of_text(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("ab", encoding="utf-8")
    (tmp_path / "b.txt").write_text("é", encoding="utf-8")
    enc = tokenizer.byte_tokenizer()

    tokens = corpus_tokens(str(tmp_path), enc, "all")

    eot = tokenizer.eot_id(enc)
    assert tokens.ids.tolist() == [eot, *b"ab", eot, *"é".encode()]
    assert tokens.n_bytes == 4


def test_a_text_of_one_token_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("x", encoding="utf-8")
    enc = tokenizer.build_tokenizer("bytes")

    # The single byte gives [eot, x], enough; the character split puts it in validation, leaving no training text.
    assert corpus_tokens(str(tmp_path / "one.txt"), enc).ids.numel() == 2
    with pytest.raises(MiniGPTError, match="train text of .* shorter than 2 tokens"):
        corpus_tokens(str(tmp_path / "one.txt"), enc, "train")


def test_out_of_range_val_fraction_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(TEXT, encoding="utf-8")

    with pytest.raises(MiniGPTError, match="val_fraction 0.9 is out of range"):
        corpus_tokens(str(tmp_path / "a.txt"), tokenizer.byte_tokenizer(), "val", 0.9)


# ---- the command ----------------------------------------------------------------------------------


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_eval_prints_one_line_whose_numbers_agree(tiny_checkpoint: Path, text_file: Path) -> None:
    code, out, _ = cli(["--ckpt", str(tiny_checkpoint), "--data", str(text_file), "--batch-size", "4"])

    assert code == 0
    line = parse(out)
    tokens, n_bytes = number(line["tokens"]), number(line["bytes"])
    assert (line["ckpt"], line["data"], line["split"]) == (str(tiny_checkpoint), str(text_file), "all")
    assert tokens == n_bytes == len(TEXT.encode())  # bytes tokenizer: the leading end-of-text is not predicted
    loss = float(line["loss"])
    assert 0 < loss < 2 * math.log(257)  # random weights: about ln(vocab)
    assert float(line["bpb"]) == pytest.approx(loss * tokens / n_bytes / math.log(2), abs=1e-3)
    assert float(line["ppl"]) == pytest.approx(math.exp(loss), rel=1e-3)


def test_val_split_scores_fewer_tokens_than_all(tiny_checkpoint: Path, text_file: Path) -> None:
    argv = ["--ckpt", str(tiny_checkpoint), "--data", str(text_file), "--split"]

    counts = {split: number(parse(cli([*argv, split])[1])["tokens"]) for split in ("all", "val")}
    assert 0 < counts["val"] < counts["all"] / 5  # the default 0.1 of the text


def test_val_split_uses_the_checkpoints_val_fraction(tmp_path: Path, tiny_model: GPT, text_file: Path) -> None:
    ckpt = small_checkpoint(tmp_path / "half.ckpt", tiny_model, {"val_fraction": 0.5})
    argv = ["--ckpt", str(ckpt), "--data", str(text_file), "--split", "val"]

    recorded, explicit = cli(argv), cli([*argv, "--val_fraction", "0.5"])

    assert parse(recorded[1]) == parse(explicit[1])
    assert number(parse(recorded[1])["tokens"]) == pytest.approx(len(TEXT) / 2, abs=1)


def test_a_run_folder_is_evaluated_through_its_last_checkpoint(
    tmp_path: Path, tiny_model: GPT, text_file: Path
) -> None:
    small_checkpoint(tmp_path / "run" / "last.ckpt", tiny_model, {})

    code, out, _ = cli(["--ckpt", str(tmp_path / "run"), "--data", str(text_file)])

    assert code == 0 and parse(out)["ckpt"] == str(tmp_path / "run" / "last.ckpt")


def test_a_run_folder_with_both_checkpoints_is_evaluated_through_its_best(
    tmp_path: Path, tiny_model: GPT, text_file: Path
) -> None:
    for name in ("last.ckpt", "best.ckpt"):
        small_checkpoint(tmp_path / "run" / name, tiny_model, {})

    code, out, _ = cli(["--ckpt", str(tmp_path / "run"), "--data", str(text_file)])

    assert code == 0 and parse(out)["ckpt"] == str(tmp_path / "run" / "best.ckpt")


@pytest.mark.parametrize(("argv", "message"), [
    (["--ckpt", "{tmp}/nowhere.ckpt", "--data", "{text}"], "checkpoint .*nowhere.ckpt' not found"),
    (["--ckpt", "{ckpt}", "--data", "{tmp}/empty.txt"], "contains no text"),
    (["--ckpt", "{ckpt}", "--data", "{text}", "--split", "test"], "argument --split: invalid choice"),
    (["--ckpt", "{ckpt}", "--data", "{text}", "--stride", "64"], "stride 64 is out of range"),
    (["--ckpt", "{ckpt}", "--data", "{text}", "--batch_size", "0"], "argument --batch_size"),
    (["--ckpt", "{ckpt}", "--data", "{text}", "--split", "val", "--val_fraction", "0"], "val_fraction 0.0 is out of"),
    (["--ckpt", "{ckpt}", "--data", "{text}", "--val_fraction", "0.2"], "give it with --split val or --split train"),
    (["--ckpt", "/dev/null", "--data", "{text}"], "checkpoint '/dev/null' is not a regular file"),
])  # fmt: skip
def test_bad_inputs_are_one_line_errors(
    tmp_path: Path, tiny_checkpoint: Path, text_file: Path, argv: list[str], message: str
) -> None:
    (tmp_path / "empty.txt").write_text("")
    argv = [arg.format(tmp=tmp_path, text=text_file, ckpt=tiny_checkpoint) for arg in argv]

    code, out, err = cli(argv)

    assert_one_line_error(code, out, err)
    assert re.search(message, err), err
