"""The attention of one text as an object (`Attention`): its maps, head statistics and head importance, the
files `minigpt attention` writes, and the attention page inline in Jupyter. `minigpt.api.MiniGPT.attention`
makes one; this is the Python face of `minigpt.inspection.report`."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import tiktoken
import torch

from minigpt.errors import MiniGPTError
from minigpt.inspection import ablation
from minigpt.inspection.maps import top_heads
from minigpt.inspection.notebook import notebook_html
from minigpt.inspection.report import Analysis, write_report
from minigpt.model import GPT


class Attention:
    """The attention of one text: maps of every layer and head, head statistics and, after `ablate`, how much
    the loss needs each head. In Jupyter it shows as the attention page (model view and head view)."""

    def __init__(
        self, analysis: Analysis, model: GPT, tokenizer: tiktoken.Encoding, ids: list[int], val_fraction: float
    ) -> None:
        self.analysis = analysis
        self._model, self._tokenizer = model, tokenizer
        self._ids = ids  # the whole text: the maps show its last block_size tokens, ablation scores all of it
        self._val_fraction = val_fraction  # how the model's run split its corpus: what `ablate(data)` measures on

    @property
    def weights(self) -> torch.Tensor:
        """(n_layer, n_head, T, T): row i is what query token i attends to."""
        return self.analysis.maps.weights

    @property
    def tokens(self) -> list[str]:
        """Each token as text."""
        return self.analysis.tokens

    @property
    def stats(self) -> dict[str, torch.Tensor]:
        """Each statistic's (n_layer, n_head) scores by name: previous_token, first_token, induction, entropy,
        and loss_change after `ablate`."""
        kinds = self.analysis.stats.kinds()
        if self.analysis.importance is not None:
            kinds["loss_change"] = self.analysis.importance.loss_change
        return kinds

    def top_heads(self, kind: str = "previous_token", k: int = 3) -> list[tuple[int, int, float]]:
        """The `k` heads that score highest on `kind` (lowest for entropy) as (layer, head, score)."""
        stats = self.stats
        if kind not in stats:
            raise MiniGPTError(f"unknown statistic {kind!r}: use one of {', '.join(stats)}")
        return top_heads(stats[kind], k, largest=kind != "entropy")

    def ablate(self, data: str | None = None, *, windows: int = ablation.DEFAULT_WINDOWS) -> Attention:
        """This attention with each head's importance: how much the loss rises when the head's output is zeroed,
        on this text, or with `data` on `windows` windows of that corpus's validation split."""
        block_size = self._model.config.block_size
        if data is None:
            return self.ablate_on(ablation.text_windows(self._ids, block_size, "the text"))
        return self.ablate_on(ablation.corpus_windows(data, self._tokenizer, block_size, self._val_fraction, windows))

    def ablate_on(self, windows: ablation.Windows) -> Attention:
        """`ablate` measured on any windows (`minigpt.inspection.ablation.text_windows`, `corpus_windows`)."""
        importance = ablation.head_importance(self._model, windows)
        with_importance = dataclasses.replace(self.analysis, importance=importance)
        return Attention(with_importance, self._model, self._tokenizer, self._ids, self._val_fraction)

    def save(self, folder: str | os.PathLike[str], *, per_head: bool = False, top: int = 3) -> list[Path]:
        """Write the files ``minigpt attention --out folder`` writes (PNGs, attention.html, attention.npz,
        heads.json, importance.png after `ablate`); return their paths."""
        return write_report(Path(folder), self.analysis, per_head=per_head, top=top)

    def __repr__(self) -> str:
        n_layer, n_head = self.weights.shape[:2]
        best = ", ".join(f"{kind} L{l}H{h} {s:.3f}" for kind in ("previous_token", "induction") for l, h, s in self.top_heads(kind, 1))
        return f"Attention({len(self.tokens)} tokens, {n_layer} layers x {n_head} heads; strongest: {best or 'n/a'})"

    def _repr_html_(self) -> str:
        return notebook_html(self.analysis)
