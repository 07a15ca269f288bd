"""CUDA checks: run with `pytest -m gpu` on a machine with a GPU; skipped everywhere else."""

from dataclasses import asdict

import pytest
import torch

from minigpt import checkpoint
from minigpt.sample import SamplingSettings, make_generators, sample_tokens
from minigpt.training.module import LitGPT, next_token_loss
from tests.helpers import tiny_config
from tests.helpers import train_in_process as train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_kv_cache_matches_full_forward_on_cuda(tiny_model):
    model = tiny_model.cuda()
    idx = torch.randint(0, 257, (2, 32), device="cuda")
    cache = model.new_cache()
    pieces = [model(idx[:, :5], cache)] + [model(idx[:, t : t + 1], cache) for t in range(5, 32)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(idx), atol=1e-4, rtol=1e-4)


def test_bf16_autocast_logits_stay_close_to_fp32(tiny_model):
    model = tiny_model.cuda()
    idx = torch.randint(0, 257, (2, 32), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = model(idx).float()
    assert (low - model(idx)).abs().max().item() < 0.1


def test_adamw_is_fused_on_cuda():
    module = LitGPT(asdict(tiny_config()), {}).cuda()
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    assert module.configure_optimizers()["optimizer"].defaults["fused"]


def test_the_compiled_loss_and_its_gradients_match_eager_on_cuda(tiny_model):
    model = tiny_model.cuda()
    batch = torch.randint(0, 257, (4, 33), device="cuda")
    compiled = torch.compile(next_token_loss)(model, batch)
    (grad,) = torch.autograd.grad(compiled, model.lm_head.weight)
    eager = next_token_loss(model, batch)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, torch.autograd.grad(eager, model.lm_head.weight)[0], atol=1e-5, rtol=1e-4)


def test_gpu_training_is_compiled_by_default_and_logs_mfu(tmp_path, caplog):
    from torch._dynamo.utils import counters

    counters.clear()
    with caplog.at_level("INFO", logger="minigpt.training.callbacks.progress"):
        assert train(tmp_path, "run", "--trainer.accelerator", "gpu", "--trainer.devices", "1") == 0
    assert counters["stats"]["unique_graphs"] >= 2  # training and evaluation
    lines = [r.getMessage() for r in caplog.records if " tokens/s" in r.getMessage()]
    assert lines and all(" | MFU " in line for line in lines), lines


def test_gpu_training_writes_a_checkpoint_that_samples_on_cpu(tmp_path):
    assert train(tmp_path, "run", "--trainer.accelerator", "gpu", "--trainer.devices", "1") == 0
    ckpt = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"] and ckpt["global_step"] == 6
    loaded = checkpoint.load(tmp_path / "run" / "last.ckpt", device="cpu")
    steps = sample_tokens(loaded.model, torch.zeros(1, 1, dtype=torch.long), SamplingSettings(max_new_tokens=5),
                          eot_id=-1, generators=make_generators(1, 1))  # fmt: skip
    assert len(list(steps)) == 5


two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


@two_gpus
def test_ddp_on_two_gpus_makes_one_run_and_prints_once(tmp_path):
    from tests.helpers import assert_one_run
    from tests.helpers import train_subprocess as train_command

    done = train_command(tmp_path, "--trainer.accelerator", "gpu", "--trainer.devices", "2", "--trainer.strategy", "ddp", "--out_dir", "run")
    assert done.returncode == 0, done.stderr
    assert_one_run(tmp_path / "run", done.stdout + done.stderr)


@two_gpus
def test_fsdp_on_two_gpus_writes_one_self_contained_checkpoint_and_never_hangs(tmp_path):
    from tests.helpers import assert_one_run
    from tests.helpers import train_subprocess as train_command

    done = train_command(tmp_path, "--trainer.accelerator", "gpu", "--trainer.devices", "2", "--trainer.strategy", "fsdp", "--out_dir", "run")
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert text.count("samples are not logged under FSDPStrategy") == 1
    assert_one_run(tmp_path / "run", text.replace("samples are not logged", "").replace("attention maps are not logged", ""))
    assert checkpoint.load(tmp_path / "run" / "last.ckpt").model.config.n_layer == 2


def test_on_cuda_a_non_finite_step_is_skipped_on_the_device_and_reported(tmp_path, monkeypatch, capsys):
    guard = LitGPT.on_before_optimizer_step

    def inf_gradients(self, optimizer):
        assert self._guard_on_device(optimizer)  # no wait for the GPU at each step
        if self.global_step == 1:
            next(self.model.parameters()).grad.fill_(float("inf"))
        return guard(self, optimizer)

    monkeypatch.setattr(LitGPT, "on_before_optimizer_step", inf_gradients)
    assert train(tmp_path, "run", "--trainer.accelerator", "gpu", "--trainer.devices", "1") == 2
    assert "diverged at step 2: the gradient norm is inf" in capsys.readouterr().err
