"""The Python face of minigpt: `load` a model from anything minigpt reads, then sample from it, look inside it,
score it and export it; or `train` one. `import minigpt` offers these names without importing them (see
`minigpt/__init__.py`), so only what is used is loaded, and nothing here imports Lightning but `train`.

    lm = minigpt.load("runs/shakespeare_cpu")
    lm.generate("ROMEO:", max_new_tokens=100, seed=1)
    att = lm.attention("To be, or not to b")      # shown inline in Jupyter; .save(folder), .ablate()
    att.logit_lens()                               # the top next tokens read out after every block
    att.patch("To go, or not to g", "e", wrong="o")  # how much of logit("e") - logit("o") each head restores
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tiktoken
import torch

from minigpt import checkpoint, checks, signals
from minigpt import tokenizer as tok
from minigpt.checkpoint import Loaded
from minigpt.data.prepare import DEFAULT_VAL_FRACTION
from minigpt.device import autocast
from minigpt.device import resolve as resolve_device
from minigpt.errors import MiniGPTError
from minigpt.evaluate import Evaluation, corpus_tokens, score
from minigpt.hf import pretrained
from minigpt.inspection.maps import AGGREGATES, in_use
from minigpt.model import GPT, GPTConfig
from minigpt.payload import Payload
from minigpt.sample import SamplingSettings
from minigpt.sample import stream as stream_pieces

if TYPE_CHECKING:
    from minigpt.harness import TaskResults
    from minigpt.inspection.attention import Attention
    from minigpt.training.config import TrainConfig


def load(source: str | os.PathLike[str], device: str | torch.device = "cpu") -> MiniGPT:
    """The model of `source`: a minigpt checkpoint or run folder (its best checkpoint, see
    `minigpt.checkpoint.file_to_use`), a Hugging Face GPT-2 folder, or ``hf:REPO_ID``; on `device` (cpu, cuda,
    cuda:N, mps or auto), ready for inference. Every command that takes a model (generate, attention, eval, export,
    train --init) loads it here. Anything unusable is a `MiniGPTError`."""
    source, device = checks.path(source, "model source"), resolve_device(device)
    checkpoint.check_lookup(source)
    if pretrained.is_pretrained_source(source):
        return MiniGPT(pretrained.load_pretrained(source, device), source, source)
    path = checkpoint.file_to_use(source)
    return MiniGPT(checkpoint.load(path, device), source, str(path))


def train(config: TrainConfig | str | os.PathLike[str] | None = None, **overrides: Any) -> Path | None:
    """Train a model, as ``minigpt train`` does, and return its run folder (None in the other processes of a
    distributed run, which global rank 0 alone writes; under torchrun every process calls this).

    `config` is a `TrainConfig`, or a bundled config's name or a YAML file to read over the defaults (None: the
    defaults alone), with `overrides` by option name; groups take dicts: ``train("shakespeare_cpu",
    data="my.txt", trainer={"max_steps": 200}, model={"n_layer": 2})``. Imports Lightning.
    """
    from minigpt.training.config import TrainConfig

    with warnings.catch_warnings():  # tqdm.auto asks a notebook for ipywidgets on import; no bar is drawn there
        warnings.filterwarnings("ignore", message="IProgress not found")
        from minigpt.training.run import train as run_training

    if isinstance(config, TrainConfig):
        if overrides:
            raise MiniGPTError("pass either a TrainConfig or a config name with options, not both")
    else:
        config = TrainConfig.load(config, **overrides)
    # Ctrl-C (a notebook's interrupt too) and SIGTERM stop at a step boundary with last.ckpt saved, as in the command.
    with _progress_shown(), signals.installed():
        return run_training(config)


@contextmanager
def _progress_shown() -> Iterator[None]:
    """minigpt's messages (progress and validation lines) on stderr while it trains, as the command shows them,
    unless the caller has set up logging (then theirs decides)."""
    ours = logging.getLogger("minigpt")
    if logging.getLogger().handlers or ours.handlers:
        yield
        return
    handler, level = logging.StreamHandler(), ours.level
    handler.setFormatter(logging.Formatter("%(message)s"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    try:
        yield
    finally:
        ours.removeHandler(handler)
        ours.setLevel(level)


class MiniGPT:
    """A model with its tokenizer, as `load` returns it: sample, inspect, score or export it."""

    def __init__(self, loaded: Loaded, source: str, path: str) -> None:
        self.model: GPT = loaded.model
        """The plain PyTorch `GPT`, in eval mode."""
        self.tokenizer: tiktoken.Encoding = loaded.tokenizer
        """Its `tiktoken.Encoding`."""
        self.payload: Payload | None = loaded.payload
        """What its checkpoint records besides the weights (its run's training config and data); None for a
        Hugging Face model."""
        self.source = source
        """What it was loaded from, as given."""
        self.path = path
        """The checkpoint file that `source` means (a run folder's best.ckpt), or the Hugging Face source."""

    @property
    def val_fraction(self) -> float:
        """The share of its training corpus its run held out for validation (what ``split="val"`` means)."""
        return Loaded(self.model, self.tokenizer, self.payload).val_fraction

    @property
    def config(self) -> GPTConfig:
        """The model's shape."""
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        c = self.config
        return (
            f"MiniGPT({self.source!r}: {self.model.num_parameters() / 1e6:.2f}M parameters, {c.n_layer} layers x "
            f"{c.n_head} heads x {c.n_embd}, context {c.block_size}, {self.tokenizer.n_vocab:,} tokens)"
        )

    def generate(self, prompt: str = "", **sampling: Any) -> str:
        """One completion of `prompt` (without the prompt). `sampling` takes `SamplingSettings`' fields:
        max_new_tokens, temperature (0: greedy), top_k, top_p, repetition_penalty, stop, seed."""
        return "".join(self.stream(prompt, **sampling))

    def samples(self, prompt: str = "", n: int = 2, **sampling: Any) -> list[str]:
        """`n` completions of `prompt`, drawn together in one batch; sample i depends only on (seed, i)."""
        settings = self._settings(sampling, n)
        texts = [""] * settings.num_samples
        for i, piece in self._pieces(prompt, settings):
            texts[i] += piece
        return texts

    def stream(self, prompt: str = "", **sampling: Any) -> Iterator[str]:
        """The completion of `prompt` piece by piece, each as soon as it is whole text (see `generate`)."""
        for _, piece in self._pieces(prompt, self._settings(sampling, 1)):
            yield piece

    def _pieces(self, prompt: str, settings: SamplingSettings) -> Iterator[tuple[int, str]]:
        """The sampler's (sample, piece) pairs, each computed under the device's autocast, which is left before
        the piece goes to the caller (autocast is a per-thread switch: it must not stay on in the caller's code)."""
        checks.text(prompt, "prompt")
        pieces = stream_pieces(self.model, self.tokenizer, prompt, settings)
        while True:
            with autocast(self.device), in_use(self.model):
                pair = next(pieces, None)
            if pair is None:
                return
            yield pair

    def _settings(self, sampling: dict[str, Any], n: int) -> SamplingSettings:
        if "num_samples" in sampling:
            raise MiniGPTError("num_samples is not an option here: use samples(prompt, n=...)")
        known = {f.name for f in dataclasses.fields(SamplingSettings)}
        unknown = sorted(set(sampling) - known)
        if unknown:
            raise MiniGPTError(f"unknown sampling option {unknown[0]!r}: use {', '.join(sorted(known - {'num_samples'}))}")
        if isinstance(sampling.get("stop"), str):
            sampling["stop"] = (sampling["stop"],)
        return SamplingSettings(**{**sampling, "num_samples": n})

    def attention(
        self, text: str, *, layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
        aggregate: str | None = None,
    ) -> Attention:  # fmt: skip
        """The attention maps and head statistics of `text` (its last `block_size` tokens), as ``minigpt
        attention`` computes them; `layers`/`heads` choose what the maps show (statistics cover every head). The
        result also reads the logit lens (`Attention.logit_lens`) and patches activations from `text` into a corrupted
        text (`Attention.patch`); `Attention.showing` puts either on its page and in its files."""
        checks.text(text, "text")
        if aggregate is not None and (not isinstance(aggregate, str) or aggregate not in AGGREGATES):
            raise MiniGPTError(f"unknown aggregate {checks.shown(aggregate)}: use one of {', '.join(AGGREGATES)}, or None")
        layers = checks.indices(layers, "layer", self.config.n_layer)
        heads = checks.indices(heads, "head", self.config.n_head)
        ids = tok.encode(self.tokenizer, text)
        if not ids:
            raise MiniGPTError("the text is empty: give some text to look at")
        # matplotlib: only once maps are asked for
        from minigpt.inspection.attention import Attention
        from minigpt.inspection.report import analyse

        with in_use(self.model):
            analysis = analyse(self.model, self.tokenizer, ids, layers=layers, heads=heads, aggregate=aggregate)
        return Attention(analysis, self.model, self.tokenizer, ids, self.val_fraction)

    def eval(
        self, data: str, *, split: str = "all", val_fraction: float | None = None, stride: int | None = None,
        batch_size: int = 8, cache_dir: str | os.PathLike[str] | None = None,
    ) -> Evaluation:  # fmt: skip
        """The loss of every token of the corpus `data` (a file, folder, glob, ``hf:`` dataset or builtin): ``all``
        of it, as ``minigpt eval`` by default, or its ``val`` or ``train`` split as the model's run made it (with its
        recorded `val_fraction`, unless given)."""
        data = checks.path(data, "data")
        stride = None if stride is None else checks.whole_number(stride, "stride")
        batch_size = checks.whole_number(batch_size, "batch_size")
        cache = Path(checks.path(cache_dir, "cache_dir")) if cache_dir is not None else None
        if val_fraction is not None:
            if split == "all":
                raise MiniGPTError("val_fraction says how a run split its corpus: give it with split='val' or 'train'")
            val_fraction = checks.real_number(val_fraction, "val_fraction")
        fraction = val_fraction if val_fraction is not None else self.val_fraction if split != "all" else DEFAULT_VAL_FRACTION
        tokens = corpus_tokens(data, self.tokenizer, split, fraction, cache)
        with autocast(self.device), in_use(self.model):
            result = score(self.model, tokens.ids, stride, batch_size)
        return Evaluation(
            data, split, result.tokens, tokens.n_bytes, result.loss, result.bits_per_byte(tokens.n_bytes), result.perplexity
        )

    def tasks(
        self, tasks: str | Sequence[str], *, limit: int | None = None, num_fewshot: int | None = None,
        include_path: str | os.PathLike[str] | None = None, batch_size: int = 8,
    ) -> TaskResults:  # fmt: skip
        """Scores on lm-evaluation-harness tasks (``pip install 'minigpt[eval]'``), as ``minigpt eval --tasks``:
        `tasks` by name (``"hellaswag,lambada_openai"``) or task YAML file, each on its first `limit` documents,
        with `include_path` a folder of your own task YAMLs."""
        from minigpt import harness  # lm-eval: an optional extra, seconds to import

        with in_use(self.model):
            return harness.run_tasks(
                self.model, self.tokenizer, tasks, limit=limit, num_fewshot=num_fewshot, include_path=include_path,
                batch_size=batch_size, source=self.path,
            )  # fmt: skip

    def export(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write the model as a Hugging Face GPT-2 folder that ``transformers`` loads without custom code."""
        from minigpt.hf import export

        out = Path(checks.path(out_dir, "out_dir"))
        export.export(Loaded(self.model, self.tokenizer, self.payload), out)
        return out
