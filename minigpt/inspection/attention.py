"""The attention of one text as an object (`Attention`): its maps, head statistics and head importance, its logit
lens and activation patching against a corrupted text, the files `minigpt attention` writes, and the attention page
inline in Jupyter. `minigpt.api.MiniGPT.attention`
makes one; this is the Python face of `minigpt.inspection.report`."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import tiktoken
import torch

from minigpt import checks, signals
from minigpt import tokenizer as tok
from minigpt.errors import MiniGPTError
from minigpt.inspection import ablation
from minigpt.inspection.lens import DEFAULT_TOP, LogitLens, logit_lens
from minigpt.inspection.maps import in_use, top_heads
from minigpt.inspection.notebook import notebook_html
from minigpt.inspection.patching import Patching, activation_patching
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
        if not isinstance(kind, str) or kind not in stats:
            raise MiniGPTError(f"unknown statistic {kind!r}: use one of {', '.join(stats)}")
        return top_heads(stats[kind], checks.whole_number(k, "k"), largest=kind != "entropy")

    def ablate(self, data: str | os.PathLike[str] | None = None, *, windows: int | None = None) -> Attention:
        """This attention with each head's importance: how much the loss rises when the head's output is zeroed,
        on this text, or with `data` on `windows` (default `ablation.DEFAULT_WINDOWS`) windows of that corpus's
        validation split."""
        block_size = self._model.config.block_size
        if data is None:
            if windows is not None:
                raise MiniGPTError("windows are drawn from data: give data (a corpus) with windows, or neither")
            return self.ablate_on(ablation.text_windows(self._ids, block_size, "the text"))
        count = ablation.DEFAULT_WINDOWS if windows is None else checks.whole_number(windows, "windows")
        spec = checks.path(data, "data")
        return self.ablate_on(ablation.corpus_windows(spec, self._tokenizer, block_size, self._val_fraction, count))

    def ablate_on(self, windows: ablation.Windows) -> Attention:
        """`ablate` measured on any windows (`minigpt.inspection.ablation.text_windows`, `corpus_windows`)."""
        with in_use(self._model):
            importance = ablation.head_importance(self._model, windows)
        with_importance = dataclasses.replace(self.analysis, importance=importance)
        return Attention(with_importance, self._model, self._tokenizer, self._ids, self._val_fraction)

    def logit_lens(self, k: int = DEFAULT_TOP) -> LogitLens:
        """The `k` most likely next tokens read out of the residual stream after every block (the final LayerNorm and
        LM head applied to it), at every position of the tokens the maps show; its last row is the model's output."""
        with in_use(self._model):
            return logit_lens(self._model, self._tokenizer, self.analysis.maps.ids, k)

    def patch(self, corrupt: str, answer: str, *, wrong: str | None = None) -> Patching:
        """Activation patching from this text (the clean one) into `corrupt`, a text of as many tokens: the share of
        the difference in the `answer` token's logit minus the `wrong` token's (default: the mean logit), at the last
        position, that each head's output and the residual stream at each position restore."""
        checks.text(corrupt, "corrupted text")
        enc = self._tokenizer
        wrong_id = None if wrong is None else one_token(enc, wrong, "wrong")
        corrupt_ids = tok.encode(enc, corrupt)
        answer_id = one_token(enc, answer, "answer")
        with in_use(self._model):
            return activation_patching(self._model, enc, self._ids, corrupt_ids, answer_id, wrong_id)

    def showing(self, *, lens: LogitLens | None = None, patching: Patching | None = None) -> Attention:
        """This attention with a logit lens (`logit_lens`) and patching results (`patch`) beside the maps: on the page,
        in `save`'s files (logit_lens.png; patching_*.png and heads.json's ``patching``)."""
        for value, kind, made_by in ((lens, LogitLens, "logit_lens()"), (patching, Patching, "patch()")):
            if value is not None and not isinstance(value, kind):
                raise MiniGPTError(f"{kind.__name__.lower()} must be what {made_by} returns, got {type(value).__name__}")
        shown = dataclasses.replace(self.analysis, lens=lens or self.lens, patching=patching or self.patching)
        return Attention(shown, self._model, self._tokenizer, self._ids, self._val_fraction)

    @property
    def lens(self) -> LogitLens | None:
        """The logit lens shown (see `showing`), if any."""
        return self.analysis.lens

    @property
    def patching(self) -> Patching | None:
        """The patching results shown (see `showing`), if any."""
        return self.analysis.patching

    def save(self, folder: str | os.PathLike[str], *, per_head: bool = False, top: int = 3) -> list[Path]:
        """Write the files ``minigpt attention --out folder`` writes (PNGs, attention.html, attention.npz,
        heads.json, importance.png after `ablate`, the lens and patching figures after `showing`); return their paths."""
        folder = Path(checks.path(folder, "folder"))
        per_head, top = checks.true_or_false(per_head, "per_head"), checks.whole_number(top, "top")
        with signals.installed():  # a Ctrl-C landing in one of matplotlib's weakref callbacks still stops the save
            return write_report(folder, self.analysis, per_head=per_head, top=top)

    def __repr__(self) -> str:
        n_layer, n_head = self.weights.shape[:2]
        best = ", ".join(f"{kind} L{l}H{h} {s:.3f}" for kind in ("previous_token", "induction") for l, h, s in self.top_heads(kind, 1))
        return f"Attention({len(self.tokens)} tokens, {n_layer} layers x {n_head} heads; strongest: {best or 'n/a'})"

    def _repr_html_(self) -> str:
        return notebook_html(self.analysis)


def one_token(enc: tiktoken.Encoding, text: object, what: str) -> int:
    """The id of `text`, which must be exactly one token; anything else is a one-line `MiniGPTError` naming `what`."""
    ids = tok.encode(enc, checks.text(text, what))
    if len(ids) != 1:
        pieces = ", ".join(repr(enc.decode([i])) for i in ids[:5]) or "none"
        raise MiniGPTError(f"the {what} {text[:40]!r} is {len(ids)} tokens ({pieces}): give exactly one token")
    return ids[0]
