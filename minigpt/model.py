"""A GPT-2 shaped language model in plain PyTorch (no Lightning, nothing else from this package).

Parameter names follow GPT-2 (wte wpe h.N.attn.c_attn ...); the Hugging Face format also stores four of the
matrices transposed (its Conv1D layers), which `minigpt.hf.pretrained` handles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}  # name -> nn.GELU's `approximate`
MAX_SIZE = 2**31 - 1
"""The largest vocab_size, block_size, n_layer, n_head or n_embd: torch's int32 indexing stops there, and no real
model comes near (a config read from a file is further bounded by the weights stored with it)."""
SIZES = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")


@dataclass
class GPTConfig:
    """Model shape; `vocab_size` comes from the tokenizer, not from the user."""

    vocab_size: int = 257
    """Number of token ids (set from the tokenizer)."""
    block_size: int = 256
    """Context window: the most positions the model sees at once."""
    n_layer: int = 6
    """Number of transformer blocks."""
    n_head: int = 6
    """Attention heads per block; must divide n_embd."""
    n_embd: int = 384
    """Width of the residual stream."""
    dropout: float = 0.0
    """Dropout on embeddings, attention weights and residual branches (training only)."""
    bias: bool = True
    """Biases in Linear layers and LayerNorms, as in GPT-2."""
    activation: str = "gelu"
    """The MLP's activation: gelu (exact) or gelu_tanh (GPT-2's gelu_new, its tanh approximation)."""

    def __post_init__(self) -> None:
        """Check types and ranges, so a bad config fails here rather than deep inside torch."""
        for name in SIZES:
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= MAX_SIZE:
                raise ValueError(f"{name} must be a positive integer up to 2**31-1, got {_short(value)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if type(self.dropout) not in (int, float) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {_short(self.dropout)}")
        if type(self.bias) is not bool:
            raise ValueError(f"bias must be true or false, got {_short(self.bias)}")
        if type(self.activation) is not str or self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {_short(self.activation)}")

    def num_parameters(self) -> int:
        """The parameter count of the model this config describes (tied head counted once), without building it."""
        d, bias = self.n_embd, int(self.bias)
        norm = d + bias * d
        block = 2 * norm + (3 * d * d + bias * 3 * d) + (d * d + bias * d) + (4 * d * d + bias * 4 * d) + (4 * d * d + bias * d)
        return (self.vocab_size + self.block_size) * d + self.n_layer * block + norm

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every tensor in the state dict of `GPT(self)`, by name (the tied head too), computed without
        building the model: what weights read from a file are checked against. Its size grows with n_layer, so a
        config read from a file has its n_layer checked against the weights first (`minigpt.checkpoint.check_shapes`)."""
        d = self.n_embd

        def module(name: str, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
            # a LayerNorm's or Linear's bias has its weight's first dimension
            return {f"{name}.weight": shape, f"{name}.bias": shape[:1]} if self.bias else {f"{name}.weight": shape}

        block = {
            **module("ln_1", (d,)), **module("attn.c_attn", (3 * d, d)), **module("attn.c_proj", (d, d)),
            **module("ln_2", (d,)), **module("mlp.c_fc", (4 * d, d)), **module("mlp.c_proj", (d, 4 * d)),
        }  # fmt: skip
        shapes = {"transformer.wte.weight": (self.vocab_size, d), "transformer.wpe.weight": (self.block_size, d)}
        for layer in range(self.n_layer):
            shapes |= {f"transformer.h.{layer}.{name}": shape for name, shape in block.items()}
        return shapes | module("transformer.ln_f", (d,)) | {"lm_head.weight": (self.vocab_size, d)}


def _short(value: object) -> str:
    """`value` for a one-line message: a config read from a file may hold anything, of any length."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


class KVCache:
    """Keys and values of every layer for the positions seen so far, for incremental decoding.

    Buffers are allocated once per layer at `block_size` positions; `length` says how many are filled.
    """

    def __init__(self, n_layer: int, block_size: int) -> None:
        self.block_size = block_size
        self.keys: list[Tensor | None] = [None] * n_layer
        self.values: list[Tensor | None] = [None] * n_layer
        self.length = 0

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store this step's k, v (B, nh, T, hd) for `layer`; return all keys and values so far."""
        start, end = self.length, self.length + k.size(2)
        if self.keys[layer] is None:
            shape = (k.size(0), k.size(1), self.block_size, k.size(3))
            self.keys[layer] = k.new_empty(shape)
            self.values[layer] = v.new_empty(shape)
        keys, values = self.keys[layer], self.values[layer]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return keys[:, :, :end], values[:, :, :end]

    def advance(self, n: int) -> None:
        """Mark `n` more positions as filled (called once per forward pass, after every layer appended)."""
        self.length += n


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, all heads in one batched matmul."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, nh, T, hd)
        return tuple(t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))

    def _merge(self, y: Tensor) -> Tensor:
        B, _, T, _ = y.shape
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_embd)  # (B, nh, T, hd) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        """Attend with the fused SDPA kernel; with `cache`, `x` holds only the new positions."""
        q, k, v = self._heads(x)
        mask, is_causal = None, True
        if cache is not None and cache.length > 0:
            k, v = cache.append(layer, k, v)
            mask, is_causal = _offset_causal_mask(q.size(2), k.size(2), x.device), False
        elif cache is not None:
            cache.append(layer, k, v)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
        return self._merge(y)

    def forward_with_weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Attend with explicit weights softmax(QKᵀ/√d_k + causal mask); return (output, weights (B, nh, T, T))."""
        q, k, v = self._heads(x)
        T = q.size(2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, T)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        y = self.attn_dropout(weights) @ v  # (B, nh, T, hd)
        return self._merge(y), weights


def _offset_causal_mask(t_new: int, t_total: int, device: torch.device) -> Tensor:
    """Boolean mask (t_new, t_total) letting new query i see every key up to its own position."""
    offset = t_total - t_new
    rows = torch.arange(t_new, device=device)[:, None] + offset
    return torch.arange(t_total, device=device)[None, :] <= rows


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=ACTIVATIONS[config.activation])
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))

    def forward_with_weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, weights = self.attn.forward_with_weights(self.ln_1(x))
        x = x + y
        return x + self.mlp(self.ln_2(x)), weights


class GPT(nn.Module):
    """Token + learned position embeddings, `n_layer` blocks, final LayerNorm, LM head tied to `wte`."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2: scale residual projections so the residual stream's variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Parameter count, the tied head counted once."""
        return sum(p.numel() for p in self.parameters())

    def new_cache(self) -> KVCache:
        """An empty KV cache sized for this model."""
        return KVCache(self.config.n_layer, self.config.block_size)

    def _embed(self, idx: Tensor, start: int) -> Tensor:
        T = idx.size(1)
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} positions exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        return self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """Logits (B, T, vocab) for every position of `idx` (B, T).

        With `cache`, `idx` holds only the positions after those already cached, and the cache is extended.
        """
        start = 0 if cache is None else cache.length
        x = self._embed(idx, start)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer)
        if cache is not None:
            cache.advance(idx.size(1))
        return self.lm_head(self.transformer.ln_f(x))

    def forward_with_attention(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (B, T, vocab) and explicit attention weights (n_layer, B, n_head, T, T)."""
        x = self._embed(idx, 0)
        maps = []
        for block in self.transformer.h:
            x, weights = block.forward_with_weights(x)
            maps.append(weights)
        return self.lm_head(self.transformer.ln_f(x)), torch.stack(maps)
