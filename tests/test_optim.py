"""--optim.name muon (Muon for the blocks' matrices, AdamW for the rest, one optimizer) and --optim.schedule wsd."""

import copy
import os
import re
import signal
from dataclasses import asdict
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy, SingleDeviceStrategy

from minigpt.cli import run
from minigpt.cli.train import main
from minigpt.errors import MiniGPTError
from minigpt.training.config import OptimConfig, TrainConfig
from minigpt.training.module import LitGPT, lr_factor, next_token_loss
from minigpt.training.optim import MuonAdamW
from tests.helpers import tiny_config
from tests.helpers import train_in_process as train


def optimizer_of(steps: int = 10, strategy=None, **optim) -> tuple[LitGPT, dict]:
    """A LitGPT with these --optim settings and its configure_optimizers() for a run of `steps` steps."""
    module = LitGPT(asdict(tiny_config()), {"warmup_steps": 2, **optim})
    # What configure_optimizers reads of the trainer.
    module.trainer = SimpleNamespace(
        estimated_stepping_batches=steps, strategy=strategy or SingleDeviceStrategy(torch.device("cpu"))
    )
    return module, module.configure_optimizers()


def test_wsd_warms_up_holds_the_peak_then_decays_linearly_to_the_floor():
    factors = [lr_factor(step, 10, 100, 0.1, "wsd", 0.2) for step in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(f == 1.0 for f in factors[10:81])  # the stable phase: up to the last 20 steps
    assert factors[90] == pytest.approx(0.55) and factors[100] == pytest.approx(0.1)
    assert [lr_factor(step, 10, 100, 0.1, "wsd", 0.0) for step in (50, 99, 100)] == [1.0, 1.0, 1.0]


def test_muon_takes_the_blocks_matrices_and_adamw_the_embeddings_biases_and_gains():
    module, configured = optimizer_of(name="muon")
    optimizer = configured["optimizer"]
    assert isinstance(optimizer, MuonAdamW)
    muon = {id(p) for p in optimizer._muon.param_groups[0]["params"]}
    names = {id(p): name for name, p in module.model.named_parameters()}
    assert {names[i] for i in muon} == {
        f"transformer.h.{layer}.{matrix}.weight" for layer in range(2)
        for matrix in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }  # fmt: skip
    adamw = {id(p) for group in optimizer._adamw.param_groups for p in group["params"]}
    assert adamw | muon == set(names) and not adamw & muon  # every parameter once (the tied head is wte)


def test_one_schedule_sets_muons_and_adamws_learning_rates_alike():
    _, configured = optimizer_of(steps=20, name="muon", lr=1e-3, muon_lr=0.02, warmup_steps=4)
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    for _ in range(6):
        optimizer.step()
        schedule.step()
    lrs = [group["lr"] for group in optimizer.param_groups]
    factor = lr_factor(6, 4, 20, 0.1)
    assert lrs == pytest.approx([1e-3 * factor, 1e-3 * factor, 0.02 * factor])
    assert optimizer._muon.param_groups[0]["lr"] == pytest.approx(0.02 * factor)  # the group Muon steps with


def test_the_muon_optimizer_state_saves_and_loads_to_identical_steps():
    torch.manual_seed(0)
    batch = torch.randint(0, 257, (4, 33))
    module, configured = optimizer_of(name="muon")
    optimizer = configured["optimizer"]

    def train_step(model, opt):
        opt.zero_grad()
        next_token_loss(model, batch).backward()
        opt.step()

    for _ in range(3):
        train_step(module.model, optimizer)
    twin, restored = optimizer_of(name="muon")
    twin.model.load_state_dict(module.model.state_dict())
    restored["optimizer"].load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as from a file: no shared tensors
    for _ in range(2):
        train_step(module.model, optimizer)
        train_step(twin.model, restored["optimizer"])
    for (name, ours), theirs in zip(module.model.named_parameters(), twin.model.parameters()):
        torch.testing.assert_close(theirs, ours, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_an_interrupted_muon_run_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch, schedule):
    options = ("--optim.name", "muon", "--optim.schedule", schedule, "--model.dropout", "0.1")
    assert train(tmp_path, "whole", *options) == 0
    step = LitGPT.training_step

    def signal_during_step_four(self, batch, batch_idx):
        if self.global_step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # the step finishes, training stops after it
        return step(self, batch, batch_idx)

    monkeypatch.setattr(LitGPT, "training_step", signal_during_step_four)
    assert train(tmp_path, "cut", *options) == 128 + signal.SIGTERM
    monkeypatch.undo()
    assert torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)["global_step"] == 4

    assert run(main, ["--resume", str(tmp_path / "cut")]) == 0
    whole = torch.load(tmp_path / "whole" / "last.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)
    assert resumed["hyper_parameters"]["optim_config"]["name"] == "muon"
    for name in whole["state_dict"]:
        torch.testing.assert_close(resumed["state_dict"][name], whole["state_dict"][name], rtol=0, atol=0, msg=name)


def test_muon_refuses_a_strategy_that_shards_the_weight_matrices():
    with pytest.raises(MiniGPTError, match="--optim.name muon needs whole weight matrices in every process"):
        optimizer_of(name="muon", strategy=FSDPStrategy())


def test_resuming_with_the_other_optimizer_is_refused_in_one_line(tmp_path, capsys):
    assert train(tmp_path, "run", "--trainer.max_steps", "3") == 0
    capsys.readouterr()
    assert run(main, ["--resume", str(tmp_path / "run"), "--optim.name", "muon", "--trainer.max_steps", "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--optim.name muon cannot continue a run trained with adamw" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "optim, message",
    [
        ({"name": "sgd"}, "--optim.name must be one of adamw, muon, got 'sgd'"),
        ({"schedule": "linear"}, "--optim.schedule must be one of cosine, wsd, got 'linear'"),
        ({"decay_fraction": 1.5}, "--optim.decay_fraction must be in [0, 1], got 1.5"),
        ({"name": "muon", "muon_lr": 20.0}, "--optim.muon_lr * weight_decay must be below 1"),
    ],
)
def test_a_saved_config_with_a_bad_optimizer_setting_is_refused_naming_it(optim, message):
    with pytest.raises(MiniGPTError, match=re.escape(message)):
        TrainConfig.from_dict({"data": "x", "optim": optim})


def test_configs_written_before_muon_read_as_adamw_with_cosine():
    old = {"lr": 1e-3, "min_lr_ratio": 0.1, "warmup_steps": 100, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99}
    optim = OptimConfig(**old)
    assert (optim.name, optim.schedule) == ("adamw", "cosine")
