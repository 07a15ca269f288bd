"""The induction detector on a real induction head.

A 2-layer GPT is trained in-process to continue repeated random tokens, which only an induction circuit
can do: a layer-0 head that moves each token's predecessor into its position, and a layer-1 head that
looks for the position whose predecessor is the current token and copies what follows it. The detector
is then run the way ``minigpt attention`` runs it (`attention.extract` on a prompt, then
`attention.head_stats`), and must report that circuit in the trained model and nothing in the untrained one.
Activation patching (`minigpt.inspection.patching`) must find the same circuit by what it does: the answer that
a corrupted first copy changes comes back with the induction heads' outputs, and not with the previous-token head's.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from minigpt import tokenizer
from minigpt.inspection import maps as attention
from minigpt.inspection.patching import Patching, activation_patching
from minigpt.model import GPT, GPTConfig

VOCAB = 64
HALF = 12
"""Tokens per half of the detector's repeated sequences: block_size // 2, as `attention.induction_score` picks."""
CONFIG = GPTConfig(vocab_size=VOCAB, block_size=2 * HALF, n_layer=2, n_head=2, n_embd=64, dropout=0.0)
SHORTEST = 4
"""Shortest repeated run, and shortest distance between its two copies, in the training data."""
STEPS, WARMUP, DECAY, BATCH, LR = 600, 50, 240, 64, 2e-3
"""AdamW steps: the learning rate rises linearly to LR over the first WARMUP and falls linearly to 0 over the
last DECAY; BATCH sequences per step."""
SEED = 0
"""Seeds 0-7 of this recipe all pass, measured: repeated-half loss 0.015-0.043 nats; best layer-1 induction
score 0.93-0.98 (seed 3: 0.59, its two layer-1 heads share the work); best layer-0 previous-token score
0.52-0.73 (seed 3: 0.34). Seed 0 gives 0.018, 0.975 and 0.69."""

INDUCTION_HEAD = 0.5
"""An induction head puts most of its weight on the one induction target among the 13 to 24 positions it sees."""
PREVIOUS_TOKEN_HEAD = 0.3
"""A previous-token head puts well over twice the uniform share (0.12 here) on position i-1."""
REPEAT_LOSS = 0.1
"""Nats per token on the repeated half (chance: ln 64 = 4.16)."""


def repeated_runs(batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`batch` rows of distinct random tokens in which a run of m tokens recurs d positions later.

    The distance d is uniform on [SHORTEST, T - SHORTEST] and the run as long as fits (m = min(d, T - d)),
    at a random start. With d this varied, attending at any fixed offset predicts little, so the model has
    to find the earlier copy by its content. With d fixed (the detector's own format), or spread only over
    4..12, training found layer-0 heads that attend a fixed distance back instead (which the detector scores
    as induction heads too: 0.44-0.69) and no induction head in layer 1. Returns the ids (batch, T) and which
    next-token targets (batch, T - 1) the repeat makes predictable: every token of the second copy but its first.
    """
    T = CONFIG.block_size
    d = torch.randint(SHORTEST, T - SHORTEST + 1, (batch,), generator=generator)
    m = torch.minimum(d, T - d)
    start = (torch.rand(batch, generator=generator) * (T - m - d + 1)).long()
    position = torch.arange(T)
    first = position - start[:, None]  # (B, T) offset into the first copy
    second = first - d[:, None]  # (B, T) offset into the second copy
    in_first = (first >= 0) & (first < m[:, None])
    in_second = (second >= 0) & (second < m[:, None])
    # Slots 0..m-1 hold the run; every other position gets its own slot HALF + position, so no token repeats by chance.
    slot = torch.where(in_first, first, torch.where(in_second, second, HALF + position))
    tokens = torch.rand(batch, VOCAB, generator=generator).argsort(dim=-1)  # (B, VOCAB) a random order per row
    return tokens.gather(1, slot), (in_second & (second > 0))[:, 1:]


def train_copier(seed: int) -> GPT:
    """A model of CONFIG trained to predict the second copy of `repeated_runs`, on that loss alone."""
    torch.manual_seed(seed)
    model = GPT(CONFIG)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / WARMUP, 1.0, (STEPS - step) / DECAY)
    )
    for _ in range(STEPS):
        ids, predictable = repeated_runs(BATCH, generator)
        logits = model(ids)[:, :-1]  # (B, T-1, V)
        loss = F.cross_entropy(logits[predictable], ids[:, 1:][predictable])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def repeated_halves(batch: int, seed: int) -> Tensor:
    """(batch, 2·HALF): HALF distinct random tokens, then the same again — the detector's own format."""
    half = torch.rand(batch, VOCAB, generator=torch.Generator().manual_seed(seed)).argsort(dim=-1)[:, :HALF]
    return torch.cat([half, half], dim=1)


def uniform_attention_model() -> GPT:
    """A model of CONFIG whose query and key projections are zero, so every head attends uniformly to what it sees."""
    model = GPT(CONFIG).eval()
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight[: 2 * CONFIG.n_embd].zero_()
            block.attn.c_attn.bias[: 2 * CONFIG.n_embd].zero_()
    return model


def detector_stats(model: GPT) -> attention.HeadStats:
    """What ``minigpt attention`` computes: head statistics of the maps of a prompt (24 distinct tokens, no repeat)."""
    prompt = torch.rand(VOCAB, generator=torch.Generator().manual_seed(1)).argsort()[: CONFIG.block_size].tolist()
    return attention.head_stats(model, attention.extract(model, prompt).weights)


@pytest.fixture(scope="module")
def trained() -> GPT:
    return train_copier(SEED)


@pytest.fixture(scope="module")
def baseline() -> attention.HeadStats:
    """The detector's scores for uniform attention: what a head that has learned nothing scores."""
    return detector_stats(uniform_attention_model())


def test_trained_model_predicts_the_repeated_half(trained: GPT) -> None:
    ids = repeated_halves(256, seed=2)
    with torch.no_grad():
        logits = trained(ids)[:, HALF:-1]  # (B, HALF-1, V): predictions of tokens HALF+1 .. 2·HALF-1
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, HALF + 1 :].reshape(-1))
    assert loss < REPEAT_LOSS


def test_uniform_baseline_is_far_below_the_thresholds(baseline: attention.HeadStats) -> None:
    """Uniform attention scores, in each detector row of period d, mean(1/(i+1)) over the queries i ≥ d that
    repeat a token; the rows are averaged (≈ 0.07 here), whatever the head."""
    distances = attention.induction_distances(HALF)
    expected = torch.tensor([sum(1 / (i + 1) for i in range(d, 2 * HALF)) / (2 * HALF - d) for d in distances]).mean()
    torch.testing.assert_close(baseline.induction, expected.expand(2, 2), atol=1e-5, rtol=0)
    assert baseline.induction.max() < INDUCTION_HEAD / 5
    assert baseline.previous_token.max() < PREVIOUS_TOKEN_HEAD / 2


def test_detector_reports_an_induction_head_in_layer_1(trained: GPT) -> None:
    (layer, _, score), *_ = attention.top_heads(detector_stats(trained).induction, 1)
    assert layer == 1
    assert score > INDUCTION_HEAD


def test_detector_reports_a_previous_token_head_in_layer_0(trained: GPT) -> None:
    (layer, _, score), *_ = attention.top_heads(detector_stats(trained).previous_token, 1)
    assert layer == 0
    assert score > PREVIOUS_TOKEN_HEAD


def test_untrained_model_has_no_induction_head(baseline: attention.HeadStats) -> None:
    torch.manual_seed(SEED)
    untrained = detector_stats(GPT(CONFIG).eval())
    assert untrained.induction.max() < INDUCTION_HEAD
    torch.testing.assert_close(untrained.induction, baseline.induction, atol=0.01, rtol=0)


RESTORED = 0.8
"""The two induction heads of layer 1 together restore most of the difference (1.00-1.01 measured on the 3 prompts;
each alone 0.47-0.54: they share the work)."""
NOT_RESTORED = 0.1
"""What the previous-token head restores at most (|share| <= 0.005 measured)."""


def corrupted_copy(seed: int) -> tuple[list[int], list[int], int, int]:
    """A repeated-halves prompt without its last token (clean), the same with the first copy's last token changed
    (corrupt), the token the clean prompt's induction predicts next and the one the corrupted prompt's predicts."""
    ids = repeated_halves(1, seed)[0].tolist()
    clean = ids[:-1]  # the second copy up to the token before the first copy's last
    other = next(t for t in range(VOCAB) if t not in ids)
    corrupt = clean[: HALF - 1] + [other] + clean[HALF:]
    return clean, corrupt, ids[-1], other


@pytest.fixture(scope="module")
def patched(trained: GPT) -> list[Patching]:
    return [activation_patching(trained, tokenizer.byte_tokenizer(), *corrupted_copy(seed)) for seed in range(3)]


def test_patching_the_induction_heads_restores_the_answer_and_the_previous_token_head_does_not(
    trained: GPT, patched: list[Patching]
) -> None:
    stats = detector_stats(trained)
    (_, induction_head, _), *_ = attention.top_heads(stats.induction, 1)
    (prev_layer, prev_head, _), *_ = attention.top_heads(stats.previous_token, 1)
    for patching in patched:
        assert patching.clean > 0 > patching.corrupt  # each prompt predicts its own copy
        assert patching.heads[1, induction_head] > NOT_RESTORED * 4
        assert patching.heads[1].sum() > RESTORED
        assert abs(patching.heads[prev_layer, prev_head]) < NOT_RESTORED


def test_patching_the_residual_stream_follows_the_copy_from_its_first_occurrence_to_the_last_position(
    patched: list[Patching],
) -> None:
    """Up to layer 1 the difference sits at the corrupted position; layer 1 moves it to the last one, which is
    what an induction head does (and a previous-token head cannot: the two positions are HALF apart)."""
    for patching in patched:
        at_change, at_last = patching.residual[:, HALF - 1], patching.residual[:, -1]
        torch.testing.assert_close(at_change, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), atol=0.02, rtol=0)
        torch.testing.assert_close(at_last, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=0.02, rtol=0)
