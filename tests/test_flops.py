import pytest
import torch

from minigpt.model import GPT, GPTConfig
from minigpt.training import flops


def test_flops_per_token_counts_every_multiplying_weight_and_the_attention():
    config = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    model = GPT(config)
    weights = sum(p.numel() for name, p in model.named_parameters() if "wpe" not in name)  # the tied head once
    assert flops.flops_per_token(config, 1024) == 6 * weights + 12 * 12 * 768 * 1024
    assert 0.85e9 < flops.flops_per_token(config, 1024) < 0.87e9  # GPT-2 small: ~0.86 GFLOPs/token (nanoGPT)


@pytest.mark.parametrize(
    ("name", "precision", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16-mixed", 989e12),
        ("NVIDIA H100 PCIe", "bf16-mixed", 756e12),
        ("NVIDIA H200", "32-true", 495e12),
        ("NVIDIA A100-SXM4-80GB", "16-mixed", 312e12),
        ("NVIDIA GeForce GTX 1080", "bf16-mixed", None),
    ],
)
def test_peak_flops_by_device_name_and_precision(monkeypatch, name, precision, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    assert flops.peak_flops(torch.device("cuda"), precision) == peak


def test_no_peak_for_plain_float32_or_cpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "highest")
    assert flops.peak_flops(torch.device("cuda"), "32-true") is None
    assert flops.peak_flops(torch.device("cpu"), "bf16-mixed") is None


def test_training_logs_tokens_per_second_and_mfu_where_the_peak_is_known(tmp_path, monkeypatch, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from minigpt.training.callbacks import progress
    from tests.helpers import train_in_process as train

    monkeypatch.setattr(progress, "peak_flops", lambda device, precision: 1e9)
    with caplog.at_level("INFO", logger="minigpt.training.callbacks.progress"):
        assert train(tmp_path, "run") == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert lines and all(" | MFU " in line for line in lines)
    events = EventAccumulator(str(next((tmp_path / "run" / "tb").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    speed = {e.step: e.value for e in events.Scalars("perf/tokens_per_s")}
    mfu = {e.step: e.value for e in events.Scalars("perf/mfu")}
    config = GPTConfig(vocab_size=257, block_size=32, n_layer=2, n_head=2, n_embd=32)
    assert sorted(mfu) == sorted(speed) == list(range(1, 7))
    for step, value in mfu.items():
        assert value == pytest.approx(speed[step] * flops.flops_per_token(config, 32) / 1e9, rel=1e-5)
