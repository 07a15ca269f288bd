"""The optimizers `--optim.name` chooses, each ONE `torch.optim.Optimizer`: Lightning (automatic optimization)
steps one optimizer, one LR scheduler scales all its groups, and one state dict saves and resumes it.

- adamw: AdamW for every parameter.
- muon: Muon (torch.optim.Muon, as in the modded-nanogpt GPT-2 speedrun records) for the blocks' weight
  matrices, AdamW for the rest — the embeddings (and the head tied to them), biases and layer-norm gains, which
  Muon's orthogonalized update does not suit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from minigpt.model import GPT

HIDDEN_PREFIX = "transformer.h."
"""The blocks' parameters: their 2-D ones are the hidden matrices that Muon takes."""


def adamw_groups(params: list[torch.nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's groups: matrices and embeddings decay, biases and layer-norm gains do not."""
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def hidden_matrices(model: GPT) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """The trainable parameters split into (the blocks' weight matrices, everything else)."""
    hidden, other = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (hidden if name.startswith(HIDDEN_PREFIX) and param.dim() == 2 else other).append(param)
    return hidden, other


class MuonAdamW(torch.optim.Optimizer):
    """Muon for `muon_params`, AdamW for `adamw_groups`, stepped together as one optimizer. Its `param_groups`
    are AdamW's groups then Muon's (each keeps its own lr, so one schedule scales both by the same factor), and
    its `state` is theirs: `state_dict` and `load_state_dict` save and restore both exactly."""

    def __init__(
        self, adamw_groups: list[dict[str, Any]], muon_params: list[torch.nn.Parameter],
        adamw: dict[str, Any], muon: dict[str, Any],
    ) -> None:  # fmt: skip
        self._adamw = torch.optim.AdamW(adamw_groups, **adamw)
        self._muon = torch.optim.Muon(muon_params, **muon)
        # The same group dicts: a schedule that sets this optimizer's lr sets theirs.
        super().__init__([*self._adamw.param_groups, *self._muon.param_groups], defaults={})
        self._share_state()

    def _share_state(self) -> None:
        """Point the two inner optimizers at this one's groups and state (`load_state_dict` replaces both)."""
        count = len(self._adamw.param_groups)
        self._adamw.param_groups, self._muon.param_groups = self.param_groups[:count], self.param_groups[count:]
        self._adamw.state = self._muon.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._share_state()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step of both; `closure` (Lightning's forward and backward) runs once, first."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._adamw.step()
        self._muon.step()
        return loss
