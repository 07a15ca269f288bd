"""Activation patching: which activations carry the difference between a clean and a corrupted text.

Both texts have the same number of tokens. The metric is read at the last position: the answer token's logit
minus the wrong token's logit when one is given, else minus the mean logit over the vocabulary (so that a shift of
every logit does not count). One activation of the clean run is put into the corrupted run in place of its own,
and the share of the clean-vs-corrupt difference that comes back is

    restored = (patched - corrupt) / (clean - corrupt)

1 where the patched activation carries all of it, 0 where none. Two kinds of activation (`Site`):

- a head's output: its slice of the concatenated head outputs that the layer's ``attn.c_proj`` reads, at every
  position (as `minigpt.inspection.ablation` zeroes it);
- the residual stream after n blocks (n = 0: the embeddings; see `minigpt.inspection.lens.residual_modules`) at
  one position, or at every position (which restores exactly 1: everything after it runs as in the clean run).

The model file is not touched: forward hooks swap the activations while the patched runs go through, in batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import tiktoken
import torch
from torch import Tensor

from minigpt.errors import MiniGPTError
from minigpt.inspection.lens import residual_modules, residual_names, residuals_caught
from minigpt.inspection.maps import hooked, inference
from minigpt.model import GPT

BATCH = 32
DEFINITION = (
    "share of the clean-vs-corrupt difference of the metric restored when one activation of the clean run replaces "
    "the corrupted run's: (patched - corrupt) / (clean - corrupt); heads: the head's output at every position; "
    "residual: the residual stream after n blocks (row 0: the embeddings) at one position"
)
SAME = 1e-6
"""Below this clean-vs-corrupt difference (in logits) there is nothing to restore."""


@dataclass(frozen=True)
class Site:
    """One activation to take from the clean run: head `index` of layer `layer` (kind "head"), or the residual
    stream after `layer` blocks at position `index`, every position where `index` is None (kind "residual")."""

    kind: str
    layer: int
    index: int | None


@dataclass(frozen=True)
class Patching:
    """How much of the clean-vs-corrupt difference each activation restores."""

    heads: Tensor
    """(n_layer, n_head) float64: the share restored by each head's output (every position)."""
    residual: Tensor
    """(n_layer + 1, T) float64: the share restored by the residual stream after n blocks at position i."""
    clean: float
    """The metric on the clean text."""
    corrupt: float
    """The metric on the corrupted text."""
    answer: str
    """The token whose logit the metric reads."""
    wrong: str | None
    """The token whose logit it subtracts; None: the mean logit."""
    clean_tokens: list[str]
    corrupt_tokens: list[str]
    layers: list[str]
    """What each row of `residual` reads: "embed", "block 0", ..."""

    @property
    def metric(self) -> str:
        """The metric in words, e.g. ``logit(" Mary") - logit(" John") at the last position``."""
        other = "mean logit" if self.wrong is None else f"logit({self.wrong!r})"
        return f"logit({self.answer!r}) - {other} at the last position"

    def record(self) -> dict:
        """Plain data (heads.json's ``patching`` section, the attention page): the definition, the metric on both
        texts, and the share restored by each head ([layer][head]) and residual stream ([row][position])."""
        return {
            "definition": DEFINITION,
            "metric": self.metric,
            "answer": self.answer,
            "wrong": self.wrong,
            "clean": round(self.clean, 6),
            "corrupt": round(self.corrupt, 6),
            "clean_tokens": self.clean_tokens,
            "corrupt_tokens": self.corrupt_tokens,
            "heads": [[round(x, 6) for x in row] for row in self.heads.tolist()],
            "residual_layers": self.layers,
            "residual": [[round(x, 6) for x in row] for row in self.residual.tolist()],
        }


def logit_difference(logits: Tensor, answer: int, wrong: int | None) -> Tensor:
    """The metric of a batch: logits (B, T, vocab) → (B,) float64, read at the last position."""
    last = logits[:, -1].double()  # (B, vocab)
    other = last.mean(dim=-1) if wrong is None else last[:, wrong]
    return last[:, answer] - other


@contextmanager
def _patched(model: GPT, sites: Sequence[Site], clean_heads: list[Tensor], clean_residual: list[Tensor]) -> Iterator[None]:
    """Inside the block, row r of a batch gets site r's activation from the clean run (heads' outputs (1, T, C)
    and residual streams (1, T, C) of every layer, as caught)."""
    config = model.config
    hd = config.n_embd // config.n_head

    def head_hook(layer: int):
        def hook(module: torch.nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            y = args[0].clone()  # (B, T, C)
            for row, site in enumerate(sites):
                if site.kind == "head" and site.layer == layer:
                    part = slice(site.index * hd, (site.index + 1) * hd)
                    y[row, :, part] = clean_heads[layer][0, :, part]
            return (y,)

        return hook

    def residual_hook(n: int):
        def hook(module: torch.nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
            out = out.clone()  # (B, T, C)
            for row, site in enumerate(sites):
                if site.kind == "residual" and site.layer == n:
                    where = slice(None) if site.index is None else site.index
                    out[row, where] = clean_residual[n][0, where]
            return out

        return hook

    handles = [block.attn.c_proj.register_forward_pre_hook(head_hook(l)) for l, block in enumerate(model.transformer.h)]
    handles += [module.register_forward_hook(residual_hook(n)) for n, module in enumerate(residual_modules(model))]
    with hooked(handles):
        yield


def restored(
    model: GPT, clean: Sequence[int], corrupt: Sequence[int], answer: int, wrong: int | None, sites: Sequence[Site],
    batch_size: int = BATCH,
) -> tuple[Tensor, float, float]:  # fmt: skip
    """The share of the difference that each of `sites` restores (len(sites),) float64, with the metric on the clean
    and on the corrupted text (ids of the same length, at most `block_size`); eval mode, no gradients. Texts the
    model scores alike leave nothing to restore: a `MiniGPTError`."""
    device = next(model.parameters()).device
    clean_idx = torch.tensor([list(clean)], dtype=torch.long, device=device)  # (1, T)
    corrupt_idx = torch.tensor([list(corrupt)], dtype=torch.long, device=device)
    heads: list[Tensor] = []  # each layer's c_proj input (1, T, C) in the clean run
    catch_heads = (block.attn.c_proj.register_forward_pre_hook(lambda m, a: heads.append(a[0]))
                   for block in model.transformer.h)  # fmt: skip
    with inference(model):
        with hooked(catch_heads), residuals_caught(model) as residual:
            clean_metric = float(logit_difference(model(clean_idx), answer, wrong)[0])
        corrupt_metric = float(logit_difference(model(corrupt_idx), answer, wrong)[0])
        if abs(clean_metric - corrupt_metric) < SAME:
            raise MiniGPTError(
                f"the clean and corrupted texts give the answer the same score ({clean_metric:.4f}): nothing to "
                "restore; choose texts, or an answer, that the model tells apart"
            )
        shares = [torch.zeros(0, dtype=torch.float64)]
        for start in range(0, len(sites), batch_size):
            chunk = sites[start : start + batch_size]
            with _patched(model, chunk, heads, residual):
                patched = logit_difference(model(corrupt_idx.expand(len(chunk), -1)), answer, wrong)  # (b,)
            shares.append((patched.cpu() - corrupt_metric) / (clean_metric - corrupt_metric))
    return torch.cat(shares), clean_metric, corrupt_metric


def activation_patching(
    model: GPT, enc: tiktoken.Encoding, clean: Sequence[int], corrupt: Sequence[int], answer: int,
    wrong: int | None = None,
) -> Patching:  # fmt: skip
    """Patch every head's output and the residual stream after every block at every position from the `clean`
    ids into the `corrupt` ids (same length, at most `block_size`), measuring the `answer` token's logit minus the
    `wrong` token's (None: the mean logit)."""
    # report draws the result: it is imported only here
    from minigpt.inspection.report import token_strings

    config = model.config
    if len(clean) != len(corrupt):
        raise MiniGPTError(
            f"the clean text has {len(clean)} tokens and the corrupted one {len(corrupt)}: patching needs the same "
            "number of tokens in both (swap words for words of the same token length)"
        )
    if not 1 <= len(clean) <= config.block_size:
        raise MiniGPTError(f"patching reads 1 to {config.block_size} tokens per text (the context), got {len(clean)}")
    for what, token in (("answer", answer), ("wrong", wrong)):
        if token is not None and not 0 <= token < config.vocab_size:
            raise MiniGPTError(f"the {what} token id {token} is outside the vocabulary (0 to {config.vocab_size - 1})")
    if wrong == answer:
        raise MiniGPTError("the answer and the wrong token are the same: their difference is always 0")
    T = len(clean)
    head_sites = [Site("head", l, h) for l in range(config.n_layer) for h in range(config.n_head)]
    residual_sites = [Site("residual", n, i) for n in range(config.n_layer + 1) for i in range(T)]
    shares, clean_metric, corrupt_metric = restored(model, clean, corrupt, answer, wrong, head_sites + residual_sites)
    return Patching(
        heads=shares[: len(head_sites)].view(config.n_layer, config.n_head),
        residual=shares[len(head_sites) :].view(config.n_layer + 1, T),
        clean=clean_metric,
        corrupt=corrupt_metric,
        answer=token_strings(enc, [answer])[0],
        wrong=None if wrong is None else token_strings(enc, [wrong])[0],
        clean_tokens=token_strings(enc, clean),
        corrupt_tokens=token_strings(enc, corrupt),
        layers=residual_names(config.n_layer),
    )
