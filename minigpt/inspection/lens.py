"""The logit lens (nostalgebraist, 2020): what the model would predict if it stopped after each block.

The residual stream after n blocks (n = 0: the embeddings) is read out as the model reads its last one: the final
LayerNorm ``ln_f``, then the LM head. Row n of a `LogitLens` is that read-out; the last row, after every block,
is the model's own next-token distribution. The streams are caught with forward hooks on the modules whose
output they are (`residual_modules`), so the model file is not touched; `minigpt.inspection.patching` swaps the
same activations between two runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import tiktoken
import torch
from torch import Tensor, nn

from minigpt import checks
from minigpt.errors import MiniGPTError
from minigpt.inspection.maps import hooked, inference
from minigpt.model import GPT

DEFAULT_TOP = 5


def residual_modules(model: GPT) -> list[nn.Module]:
    """The n_layer + 1 modules whose outputs are the residual stream after 0, 1, ..., n_layer blocks: the
    embedding's dropout (token + position embeddings), then every block."""
    return [model.transformer.drop, *model.transformer.h]


def residual_names(n_layer: int) -> list[str]:
    """How the residual streams are called for people: "embed", "block 0", ..., "block n_layer-1" (after it)."""
    return ["embed", *(f"block {i}" for i in range(n_layer))]


@contextmanager
def residuals_caught(model: GPT) -> Iterator[list[Tensor]]:
    """Inside the block, each forward pass appends the n_layer + 1 residual streams (B, T, C) to the list
    yielded, in order; the hooks that catch them are removed on the way out."""
    caught: list[Tensor] = []
    catch = (module.register_forward_hook(lambda m, a, out: caught.append(out)) for module in residual_modules(model))
    with hooked(catch):
        yield caught


def read_out(model: GPT, residual: Tensor) -> Tensor:
    """Logits (..., vocab) of a residual stream (..., C): the final LayerNorm and the LM head applied to it."""
    return model.lm_head(model.transformer.ln_f(residual))


@dataclass(frozen=True)
class LogitLens:
    """The `k` most likely next tokens after every block, at every position of a text."""

    probs: Tensor
    """(n_layer + 1, T, k) float32: row n is the read-out after n blocks (0: the embeddings; the last: the model's
    own output); entry [n, i, j] is the probability of the j-th most likely token to follow position i."""
    ids: Tensor
    """(n_layer + 1, T, k) int64: the token ids those probabilities belong to."""
    top: list[list[list[str]]]
    """The same tokens as text, [n][i][j]."""
    tokens: list[str]
    """The T tokens of the text, as text."""
    layers: list[str]
    """What each row reads: "embed", "block 0", ... (see `residual_names`)."""

    def record(self) -> dict:
        """Plain data (for the attention page): the rows' names, the text's tokens, and per row and position the
        top tokens and their probabilities (4 decimals)."""
        return {
            "layers": self.layers,
            "tokens": self.tokens,
            "top": self.top,
            "probs": [[[round(p, 4) for p in position] for position in row] for row in self.probs.tolist()],
        }

    def table(self) -> str:
        """The top token of every row and position as plain text, one line per row, a column per position."""
        # matplotlib only once a table is asked for
        from minigpt.inspection.heatmaps import visible

        cells = [[visible(t) for t in self.tokens], *([visible(row[i][0]) for i in range(len(self.tokens))] for row in self.top)]
        labels = ["token", *self.layers]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.tokens))]
        name = max(map(len, labels))
        return "\n".join(
            f"{label:<{name}}  " + " ".join(f"{c:<{w}}" for c, w in zip(row, widths)) for label, row in zip(labels, cells)
        )


def logit_lens(model: GPT, enc: tiktoken.Encoding, ids: Sequence[int], k: int = DEFAULT_TOP) -> LogitLens:
    """The logit lens of `ids` (at most `block_size` of them): the `k` most likely next tokens after every block
    (eval mode, no gradients; the model's previous mode is restored)."""
    # report draws the lens: it is imported only here
    from minigpt.inspection.report import token_strings

    if not 1 <= len(ids) <= model.config.block_size:
        raise MiniGPTError(f"the logit lens reads 1 to {model.config.block_size} tokens, got {len(ids)}")
    k = checks.scalar(k)  # torch.tensor(2) as 2, as every other count the API takes
    if not checks.is_whole(k) or not 1 <= k <= model.config.vocab_size:
        raise MiniGPTError(f"k must be a whole number from 1 to the vocabulary size {model.config.vocab_size}, got {k!r}")
    k = int(k)
    device = next(model.parameters()).device
    idx = torch.tensor([list(ids)], dtype=torch.long, device=device)  # (1, T)
    probs, top_ids = [], []
    with inference(model), residuals_caught(model) as caught:
        model(idx)
        # One row at a time: (T, vocab) each, never (n_layer + 1, T, vocab) at once.
        for residual in caught:
            p, i = read_out(model, residual[0]).float().softmax(dim=-1).topk(k, dim=-1)  # (T, k)
            probs.append(p.cpu())
            top_ids.append(i.cpu())
    ids_out = torch.stack(top_ids)  # (n_layer + 1, T, k)
    top = [[token_strings(enc, position.tolist()) for position in row] for row in ids_out]
    return LogitLens(torch.stack(probs), ids_out, top, token_strings(enc, ids), residual_names(model.config.n_layer))
