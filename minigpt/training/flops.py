"""Model FLOPs utilisation: the arithmetic a training step needs, against what the device can do at most.

MFU = tokens/s × FLOPs per token / the device's dense peak (PaLM, appendix B). It says how much of the
chip a run uses, whatever the model's size; tokens/s alone does not.
"""

from __future__ import annotations

import torch

from minigpt.model import GPTConfig

# Dense peak FLOP/s per device (no sparsity), by a part of torch.cuda.get_device_name(): (bf16/fp16, tf32).
# The first match wins, so the more specific names come first.
PEAK_FLOPS = (
    ("H100 PCIe", (756e12, 378e12)),
    ("H100", (989e12, 495e12)),
    ("H200", (989e12, 495e12)),
    ("H20", (148e12, 74e12)),
    ("A100", (312e12, 156e12)),
    ("A10G", (70e12, 35e12)),
    ("L40S", (362e12, 183e12)),
    ("L4", (121e12, 60e12)),
    ("RTX 4090", (165e12, 83e12)),
)


def flops_per_token(config: GPTConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward and backward): 6 per weight that multiplies it, plus 12·layers·width·
    sequence for the attention scores and their use. The position table is a lookup, not a product."""
    weights = config.num_parameters() - config.block_size * config.n_embd
    return 6.0 * weights + 12.0 * config.n_layer * config.n_embd * seq_len


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak for `precision` (Lightning's spelling, e.g. "bf16-mixed"); None where unknown,
    as on CPUs, whose peak depends on cores, clocks and vector units that torch does not report."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    half = precision.startswith(("bf16", "16"))
    if not half and torch.get_float32_matmul_precision() == "highest":
        return None  # plain fp32 on tensor-core GPUs is a small fraction of these figures, and not listed here
    for part, (half_peak, tf32_peak) in PEAK_FLOPS:
        if part in name:
            return half_peak if half else tf32_peak
    return None
