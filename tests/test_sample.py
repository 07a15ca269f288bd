"""The sampler: KV cache against the no-cache path, sampling controls, stops, seeds, batches, streaming."""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt import sample, tokenizer
from minigpt.errors import MiniGPTError
from minigpt.model import GPT, GPTConfig
from minigpt.sample import SamplingSettings

ENC = tokenizer.byte_tokenizer()
EOT = tokenizer.eot_id(ENC)


@pytest.fixture
def window_model() -> GPT:
    """block_size 16, so 40 new tokens cross the context window more than once."""
    torch.manual_seed(1)
    return GPT(GPTConfig(vocab_size=257, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()


def no_cache_logits(model: GPT, seq: torch.Tensor) -> torch.Tensor:
    """The definition the cache must match: logits of the last position of the last block_size tokens."""
    return model(seq[:, -model.config.block_size :])[:, -1]


def random_logits(rows: int = 4, vocab: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


def collect_ids(steps) -> torch.Tensor:
    return torch.stack(list(steps), dim=1)  # (B, new tokens)


# ---- KV cache ------------------------------------------------------------------------------------


@torch.inference_mode()
def test_next_logits_with_cache_equal_no_cache_at_every_step_across_the_window(window_model: GPT) -> None:
    seq = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(0))
    cache = window_model.new_cache()
    for _ in range(40):
        cached = sample.next_logits(window_model, seq, cache)
        torch.testing.assert_close(cached, no_cache_logits(window_model, seq), atol=1e-4, rtol=0)
        seq = torch.cat([seq, cached.argmax(-1, keepdim=True)], dim=1)
    assert seq.size(1) > 2 * window_model.config.block_size


def test_sampling_loop_logits_equal_no_cache_at_every_step(window_model: GPT, monkeypatch) -> None:
    seen_logits = []
    original = sample.sample_next

    def record(logits, *args, **kwargs):
        seen_logits.append(logits.clone())
        return original(logits, *args, **kwargs)

    monkeypatch.setattr(sample, "sample_next", record)
    prompt = torch.tensor([[1, 2, 3, 4, 5]])
    ids = collect_ids(
        sample.sample_tokens(
            window_model, prompt, SamplingSettings(max_new_tokens=40, temperature=1.0), eot_id=-1,
            generators=sample.make_generators(0, 1),
        )
    )
    assert len(seen_logits) == 40
    seq = torch.cat([prompt, ids], dim=1)
    with torch.inference_mode():
        for step, logits in enumerate(seen_logits):
            expected = no_cache_logits(window_model, seq[:, : prompt.size(1) + step])
            torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


def test_cache_and_no_cache_sample_the_same_tokens(window_model: GPT) -> None:
    def run(use_cache: bool) -> torch.Tensor:
        steps = sample.sample_tokens(
            window_model, torch.tensor([[7, 8, 9]] * 2), SamplingSettings(max_new_tokens=40, temperature=1.0), eot_id=-1,
            generators=sample.make_generators(3, 2), use_cache=use_cache,
        )  # fmt: skip
        return collect_ids(steps)

    assert torch.equal(run(True), run(False))


def test_long_generation_holds_at_most_one_window_and_samples_as_with_the_whole_sequence(
    window_model: GPT, monkeypatch
) -> None:
    block_size, steps = window_model.config.block_size, 200
    controls = dict(temperature=1.0, top_k=40, repetition_penalty=1.3)
    held_lengths, fed_lengths = [], []
    original_next_logits, original_forward = sample.next_logits, window_model.forward

    def record_held(model, seq, cache):
        held_lengths.append(seq.size(1))
        return original_next_logits(model, seq, cache)

    def record_fed(idx, cache=None):
        fed_lengths.append(idx.size(1))
        return original_forward(idx, cache)

    monkeypatch.setattr(sample, "next_logits", record_held)
    monkeypatch.setattr(window_model, "forward", record_fed)
    prompt = torch.tensor([[1, 2, 3, 4, 5]] * 2)
    ids = collect_ids(
        sample.sample_tokens(
            window_model, prompt, SamplingSettings(max_new_tokens=steps, **controls), eot_id=-1,
            generators=sample.make_generators(2, 2),
        )
    )
    assert max(held_lengths) == block_size + 1
    # While the sequence fits the window the cache is still used: the prompt once, then one token per step.
    fits = block_size - prompt.size(1) + 1
    assert fed_lengths == [prompt.size(1)] + [1] * (fits - 1) + [block_size] * (steps - fits)

    # The reference keeps the whole sequence and recomputes every step without a cache.
    seq, seen = prompt, torch.zeros(2, 257, dtype=torch.bool).scatter(1, prompt, True)
    generators = sample.make_generators(2, 2)
    with torch.inference_mode():
        for _ in range(steps):
            logits = sample.apply_repetition_penalty(no_cache_logits(window_model, seq), seen, 1.3)
            next_ids = sample.sample_next(logits, generators, temperature=1.0, top_k=40)
            seen.scatter_(1, next_ids[:, None], True)
            seq = torch.cat([seq, next_ids[:, None]], dim=1)
    assert torch.equal(ids, seq[:, prompt.size(1) :])


# ---- sampling controls ---------------------------------------------------------------------------


def test_temperature_zero_is_argmax() -> None:
    logits = random_logits()
    ids = sample.sample_next(logits, sample.make_generators(0, 4), temperature=0)
    assert torch.equal(ids, logits.argmax(-1))


def test_greedy_generation_follows_the_argmax_of_the_model(window_model: GPT) -> None:
    seq = torch.tensor([[10, 20, 30]])
    steps = sample.sample_tokens(
        window_model, seq, SamplingSettings(max_new_tokens=20, temperature=0), eot_id=-1,
        generators=sample.make_generators(0, 1),
    )
    ids = collect_ids(steps)
    with torch.inference_mode():
        for _ in range(20):
            seq = torch.cat([seq, no_cache_logits(window_model, seq).argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(ids[0], seq[0, 3:])


def test_top_k_one_is_greedy() -> None:
    logits = random_logits(rows=8)
    for seed in range(5):
        ids = sample.sample_next(logits, sample.make_generators(seed, 8), temperature=2.0, top_k=1)
        assert torch.equal(ids, logits.argmax(-1))


def test_top_k_keeps_exactly_the_k_largest() -> None:
    logits = random_logits()
    kept = torch.isfinite(sample.apply_top_k(logits, 5))
    assert torch.equal(kept.sum(-1), torch.full((4,), 5))
    assert torch.equal(kept, torch.zeros_like(kept).scatter(1, logits.topk(5).indices, True))


def test_top_p_one_and_top_k_vocab_change_nothing() -> None:
    logits = random_logits()
    assert torch.equal(sample.apply_top_p(logits, 1.0), logits)
    for k in (50, 51, 10_000):  # the vocabulary has 50 tokens: larger k is clamped
        assert torch.equal(sample.apply_top_k(logits, k), logits)
    filtered = sample.sample_next(logits, sample.make_generators(4, 4), temperature=1.0, top_k=50, top_p=1.0)
    assert torch.equal(filtered, sample.sample_next(logits, sample.make_generators(4, 4), temperature=1.0))


def test_top_p_keeps_the_smallest_set_reaching_p_in_vocabulary_order() -> None:
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(sample.apply_top_p(logits, p))[0].tolist()  # noqa: E731
    assert kept(0.4) == [False, True, False, False]
    assert kept(0.75) == [False, True, False, True]
    assert kept(0.85) == [True, True, False, True]
    assert kept(0.99) == [True, True, True, True]


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.floats(0.01, 0.99))
def test_top_p_mass_reaches_p_and_no_kept_token_is_spare(seed: int, p: float) -> None:
    logits = random_logits(rows=1, vocab=20, seed=seed)
    probs = logits.softmax(-1)[0]
    kept = torch.isfinite(sample.apply_top_p(logits, p))[0]
    assert probs[kept].sum() >= p - 1e-6
    # The least likely kept token was needed: without it the mass falls short of p.
    assert probs[kept].sum() - probs[kept].min() < p + 1e-6
    assert all(probs[~kept] <= probs[kept].min())


@pytest.mark.parametrize("controls", [dict(temperature=5e-324), dict(temperature=1.0, top_p=5e-324)])
def test_vanishing_temperature_or_top_p_samples_the_argmax_not_nan(controls: dict) -> None:
    logits = random_logits()
    assert torch.equal(sample.sample_next(logits, sample.make_generators(0, 4), **controls), logits.argmax(-1))


def test_huge_repetition_penalty_keeps_logits_finite() -> None:
    logits = -random_logits().abs() - 1
    penalized = sample.apply_repetition_penalty(logits, torch.ones_like(logits, dtype=torch.bool), 1e300)
    assert torch.isfinite(penalized).all()
    assert sample.sample_next(penalized, sample.make_generators(0, 4), temperature=1.0).shape == (4,)


def test_repetition_penalty_lowers_seen_logits_and_their_probability() -> None:
    logits = random_logits()
    seen = torch.zeros_like(logits, dtype=torch.bool)
    seen[:, :10] = True
    penalized = sample.apply_repetition_penalty(logits, seen, 1.5)
    assert torch.equal(penalized[:, 10:], logits[:, 10:])
    assert (penalized[:, :10] < logits[:, :10]).all()
    assert (penalized.softmax(-1)[:, :10].sum(-1) < logits.softmax(-1)[:, :10].sum(-1)).all()
    assert torch.equal(sample.apply_repetition_penalty(logits, seen, 1.0), logits)


def test_strong_repetition_penalty_avoids_prompt_and_generated_tokens(window_model: GPT) -> None:
    prompt = torch.tensor([[65, 66, 67, 68]])
    steps = sample.sample_tokens(
        window_model, prompt, SamplingSettings(max_new_tokens=12, temperature=0, repetition_penalty=1e6), eot_id=-1,
        generators=sample.make_generators(0, 1),
    )  # fmt: skip
    ids = collect_ids(steps)[0].tolist()
    assert len(set(ids)) == len(ids)
    assert not set(ids) & set(prompt[0].tolist())


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_ids_that_name_no_token_are_never_sampled(monkeypatch, temperature: float) -> None:
    """A vocabulary with unused ids among its specials (cl100k_base's layout; here <|endoftext|> at 299 after
    256 bytes): even a model that favours them samples only real tokens, so the text always decodes."""
    enc = tokenizer.from_dict(tokenizer.to_dict(ENC) | {"special_tokens": {tokenizer.EOT: 299}})
    model = GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=1, n_embd=8)).eval()
    favour_unused = torch.zeros(300)
    favour_unused[256:299] = 50.0
    monkeypatch.setattr(sample, "next_logits", lambda model, seq, cache: favour_unused.expand(seq.size(0), -1).clone())
    settings = SamplingSettings(max_new_tokens=8, num_samples=3, seed=0, temperature=temperature)
    texts = sample.generate(model, enc, "hi", settings)
    assert len(texts) == 3 and all(len(t) == 8 for t in texts)


def test_a_row_that_emits_eot_is_finished_and_generation_ends_when_all_are(window_model: GPT) -> None:
    prompts = torch.tensor([[1, 2, 3], [200, 100, 50]])
    with torch.inference_mode():
        first_choices = no_cache_logits(window_model, prompts).argmax(-1).tolist()
    assert first_choices[0] != first_choices[1]

    # Row 0's greedy first token plays <|endoftext|>: row 0 ends at once, row 1 runs on.
    def run(idx: torch.Tensor) -> list[list[int]]:
        generators = sample.make_generators(0, len(idx))
        steps = sample.sample_tokens(
            window_model, idx, SamplingSettings(max_new_tokens=10, temperature=0), eot_id=first_choices[0],
            generators=generators,
        )
        return collect_ids(steps).tolist()

    both = run(prompts)
    assert both[0] == [first_choices[0]] * len(both[0])
    assert both[1][0] == first_choices[1] and len(both[1]) > 1
    assert run(prompts[:1]) == [[first_choices[0]]]


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-0.1), dict(temperature=float("nan")), dict(temperature=float("inf")), dict(top_k=0),
        dict(top_p=0.0), dict(top_p=1.01), dict(repetition_penalty=0.99), dict(max_new_tokens=0),
        dict(num_samples=0), dict(stop=[""]), dict(temperature=10**400), dict(top_p=10**400),
    ],
)  # fmt: skip
def test_out_of_range_settings_are_user_errors(bad: dict) -> None:
    with pytest.raises(MiniGPTError):
        SamplingSettings(**bad)


def test_settings_are_frozen_and_hold_stop_strings_as_a_tuple() -> None:
    settings = SamplingSettings(stop=["\n\n", "END"])  # a list, as argparse gives it
    assert settings.stop == ("\n\n", "END")
    assert hash(settings) == hash(SamplingSettings(stop=("\n\n", "END")))
    with pytest.raises(AttributeError):
        settings.temperature = 0  # type: ignore[misc]


# ---- prompts -------------------------------------------------------------------------------------


def test_empty_prompt_starts_from_endoftext() -> None:
    assert sample.prompt_ids(ENC, "", 32) == [EOT]


def test_long_prompt_keeps_its_last_block_size_tokens_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="minigpt.sample"):
        ids = sample.prompt_ids(ENC, "a" * 40 + "0123456789", 10)
    assert ids == list(b"0123456789")
    assert "keeping its last 10" in caplog.text


# ---- seeds and batches ---------------------------------------------------------------------------


def completions(model: GPT, prompt: str = "ab", **kwargs) -> list[str]:
    return sample.generate(model, ENC, prompt, SamplingSettings(**kwargs))


def test_same_seed_same_batch_and_other_seed_other_batch(tiny_model: GPT) -> None:
    args = dict(max_new_tokens=30, temperature=1.0, num_samples=3)
    first = completions(tiny_model, seed=5, **args)
    assert first == completions(tiny_model, seed=5, **args)
    assert first != completions(tiny_model, seed=6, **args)
    assert len(set(first)) == 3  # the rows draw different numbers


def test_batched_samples_equal_samples_drawn_one_by_one(window_model: GPT) -> None:
    controls = dict(temperature=1.3, top_k=40, top_p=0.95, repetition_penalty=1.2)
    generators = sample.make_generators(11, 3)
    prompt = torch.tensor([[72, 105, 33]])
    settings = SamplingSettings(max_new_tokens=40, **controls)
    batched = collect_ids(
        sample.sample_tokens(window_model, prompt.repeat(3, 1), settings, eot_id=EOT, generators=generators)
    )
    for i in range(3):
        alone = collect_ids(
            sample.sample_tokens(
                window_model, prompt, settings, eot_id=EOT, generators=[sample.make_generators(11, 3)[i]]
            )
        )[0]  # fmt: skip
        assert torch.equal(batched[i, : alone.numel()], alone)


def test_first_sample_of_a_batch_equals_a_single_sample_with_the_same_seed(tiny_model: GPT) -> None:
    args = dict(max_new_tokens=25, temperature=1.0, seed=3)
    assert completions(tiny_model, num_samples=4, **args)[0] == completions(tiny_model, **args)[0]


# ---- text: stops and UTF-8 -----------------------------------------------------------------------


def test_stop_string_ends_the_text_before_it(tiny_model: GPT) -> None:
    full = completions(tiny_model, max_new_tokens=60, temperature=0)[0]
    stop = full[20:23]
    cut = completions(tiny_model, max_new_tokens=60, temperature=0, stop=["never there", stop])[0]
    assert cut == full[: full.find(stop)]


def test_stop_string_is_held_back_until_it_cannot_match() -> None:
    stream = sample._TextStream(["STOP", "xyz"])
    assert stream.push(b"ab S") == "ab "
    assert stream.push(b"T") == ""
    assert stream.push(b"x") == "ST"  # "x" may start "xyz"
    assert stream.push(b"y") == ""
    assert stream.close() == "xy"


def test_stop_string_across_tokens_is_never_shown() -> None:
    stream = sample._TextStream(["<END>"])
    shown = "".join(stream.push(bytes([b])) for b in b"hello <EN")
    shown += stream.push(b"D> more")
    assert stream.done
    assert shown == "hello "


def fake_tokens(ids: list[int]):
    """A stand-in for sample_tokens that emits the given ids, one per step, for one row."""

    def steps(model, idx, settings, **kwargs):
        for token in ids[: settings.max_new_tokens]:
            yield torch.tensor([token])

    return steps


def test_streaming_never_splits_a_multibyte_character(tiny_model: GPT, monkeypatch) -> None:
    text = "héllo wörld ✓ 🌍 ok"
    monkeypatch.setattr(sample, "sample_tokens", fake_tokens(list(text.encode())))
    pieces = [p for _, p in sample.stream(tiny_model, ENC, "x", SamplingSettings(max_new_tokens=100))]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert "🌍" in pieces  # the emoji's four byte tokens came out as one piece


def test_endoftext_and_what_follows_are_not_shown(tiny_model: GPT, monkeypatch) -> None:
    monkeypatch.setattr(sample, "sample_tokens", fake_tokens([*b"done", EOT, *b"hidden"]))
    assert completions(tiny_model, max_new_tokens=100) == ["done"]


def test_unfinished_character_at_the_end_is_replaced_not_dropped(tiny_model: GPT, monkeypatch) -> None:
    monkeypatch.setattr(sample, "sample_tokens", fake_tokens([*b"ok", *"🌍".encode()[:2]]))
    assert completions(tiny_model, max_new_tokens=100) == ["ok\ufffd"]


def test_a_model_with_non_finite_output_is_a_user_error_not_a_torch_crash(tiny_model):
    with torch.no_grad():
        tiny_model.lm_head.weight.mul_(1e38)  # finite weights, infinite logits
    idx = torch.zeros(1, 1, dtype=torch.long)
    settings = SamplingSettings(max_new_tokens=3)
    with pytest.raises(MiniGPTError, match="not finite"):
        list(sample.sample_tokens(tiny_model, idx, settings, eot_id=-1, generators=sample.make_generators(0, 1)))
