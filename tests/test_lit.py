import math
import os
import signal
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from minigpt import checkpoint, tokenizer
from minigpt.cli import run
from minigpt.cli.train import main
from minigpt.data.shards import ShardMeta
from minigpt.payload import Payload
from minigpt.training.module import LitGPT, lr_factor, next_token_loss
from tests.helpers import WRITTEN_BEFORE, tiny_config
from tests.helpers import train_in_process as train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    assert train(tmp, "run") == 0
    return tmp / "run"


def test_warmup_then_cosine_schedule():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_weight_decay_applies_to_matrices_only():
    module = LitGPT(asdict(tiny_config()), {})
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()  # what configure_optimizers reads
    groups = module.configure_optimizers()["optimizer"].param_groups
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] > 0 and groups[1]["weight_decay"] == 0
    for name, param in module.model.named_parameters():
        assert (id(param) in decayed) == (param.dim() >= 2), name


@pytest.mark.parametrize("warmup", [100, 60, 10])
def test_a_warmup_longer_than_training_is_clamped_to_it_with_one_warning(caplog, warmup):
    module = LitGPT(asdict(tiny_config()), {"warmup_steps": warmup})
    module.trainer = type("T", (), {"estimated_stepping_batches": 60})()  # --trainer.max_steps 60
    with caplog.at_level("WARNING", logger="minigpt.training.module"):
        schedule = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    factors = [schedule.lr_lambdas[0](step) for step in range(60)]
    assert max(factors) == pytest.approx(1.0)  # the peak lr is reached
    warnings = [r.getMessage() for r in caplog.records]
    if warmup > 60:
        assert len(warnings) == 1 and "--optim.warmup_steps 100 is longer than the 60 steps" in warnings[0]
        assert factors[-1] == pytest.approx(1.0)
    else:
        assert not warnings and factors == [lr_factor(step, warmup, 60, 0.1) for step in range(60)]


def test_fit_writes_last_and_best_checkpoints_and_logs(trained_run):
    assert (trained_run / "last.ckpt").is_file() and (trained_run / "best.ckpt").is_file()
    assert (trained_run / "config.yaml").is_file()
    assert list((trained_run / "tb").rglob("events.out.tfevents.*"))


def test_checkpoint_loads_with_weights_only_and_is_self_contained(trained_run):
    ckpt = torch.load(trained_run / "last.ckpt", weights_only=True)
    payload = ckpt[checkpoint.PAYLOAD_KEY]
    assert payload["model_config"]["n_layer"] == 2 and payload["model_config"]["vocab_size"] == 257
    assert payload["tokenizer"]["name"] == "bytes"
    assert payload["train_config"]["trainer"]["max_steps"] == 6
    assert payload["data"]["fingerprint"]
    assert ckpt["global_step"] == 6


def test_checkpoint_samples_deterministically(trained_run):
    from minigpt.sample import SamplingSettings, generate

    loaded = checkpoint.load(trained_run / "best.ckpt")
    settings = SamplingSettings(max_new_tokens=20, seed=7)
    first = list(generate(loaded.model, loaded.tokenizer, "line", settings))
    again = list(generate(loaded.model, loaded.tokenizer, "line", settings))
    assert first == again and "".join(first)


def test_validation_metrics_are_consistent(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((trained_run / "tb").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    loss = events.Scalars("val/loss")[-1].value
    # The bytes tokenizer on ASCII text: one token per byte, plus one <|endoftext|> per document.
    assert events.Scalars("val/bpb")[-1].value == pytest.approx(loss / math.log(2), rel=0.02)
    assert events.Scalars("val/ppl")[-1].value == pytest.approx(math.exp(loss), rel=1e-4)
    for tag in ("train/loss", "perf/tokens_per_s", "lr"):
        assert tag in events.Tags()["scalars"], tag


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_saves_the_step_and_resume_matches_the_uninterrupted_run(tmp_path, monkeypatch, signum):
    assert train(tmp_path, "whole", "--model.dropout", "0.1") == 0
    step = LitGPT.training_step

    def signal_during_step_five(self, batch, batch_idx):
        if self.global_step == 4:
            os.kill(os.getpid(), signum)  # arrives mid-step: the step finishes, training stops after it
        return step(self, batch, batch_idx)

    monkeypatch.setattr(LitGPT, "training_step", signal_during_step_five)
    assert train(tmp_path, "cut", "--model.dropout", "0.1") == 128 + signum
    monkeypatch.undo()
    assert torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)["global_step"] == 5

    assert run(main, ["--resume", str(tmp_path / "cut")]) == 0
    whole = torch.load(tmp_path / "whole" / "last.ckpt", weights_only=True)["state_dict"]
    resumed = torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)["state_dict"]
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], atol=1e-6, rtol=1e-5, msg=name)
    assert sorted(p.name for p in (tmp_path / "cut").glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]


def test_training_logs_attention_maps_and_samples_to_tensorboard(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained_run / "tb"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert "attention/overview" in tags["images"]
    assert "attention/entropy/L1H1" in tags["scalars"]
    assert "samples/0/text_summary" in tags["tensors"]


def test_tensorboard_logs_training_and_validation_on_the_steps_the_terminal_names(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert train(tmp_path, "run", "--trainer.log_every_n_steps", "2") == 0
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    for tag in ("train/loss", "lr", "train/grad_norm", "perf/tokens_per_s"):
        assert steps[tag] == [2, 4, 6], tag
    for tag in ("val/loss", "val/bpb", "val/train_loss"):
        assert steps[tag] == [3, 6], tag


def test_last_checkpoint_holds_the_final_step_even_between_validations(tmp_path):
    assert train(tmp_path, "odd", "--trainer.max_steps", "5") == 0  # validations at step 3 only
    assert torch.load(tmp_path / "odd" / "last.ckpt", weights_only=True)["global_step"] == 5


def payload_on(fingerprint: str) -> Payload:
    meta = ShardMeta.from_json({**WRITTEN_BEFORE, "fingerprint": fingerprint})
    return Payload(tiny_config(), tokenizer.byte_tokenizer(), {}, meta)


def test_resuming_on_changed_data_warns_and_keeps_this_runs_payload(caplog):
    module = LitGPT(asdict(tiny_config()), {}, payload=payload_on("new"))
    with caplog.at_level("WARNING", logger="minigpt.training.module"):
        module.on_load_checkpoint({checkpoint.PAYLOAD_KEY: payload_on("old").to_dict()})
    assert "corpus changed" in caplog.text
    saved = {}
    module.on_save_checkpoint(saved)
    assert saved[checkpoint.PAYLOAD_KEY]["data"]["fingerprint"] == "new"


def test_resuming_on_the_same_data_says_nothing(caplog):
    module = LitGPT(asdict(tiny_config()), {}, payload=payload_on("same"))
    with caplog.at_level("WARNING", logger="minigpt.training.module"):
        module.on_load_checkpoint({checkpoint.PAYLOAD_KEY: payload_on("same").to_dict()})
    assert "corpus changed" not in caplog.text


def test_a_diverging_run_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    loss = LitGPT._loss

    def nan_from_step_five(self, batch):
        value = loss(self, batch)
        return value * float("nan") if self.training and self.global_step >= 4 else value

    monkeypatch.setattr(LitGPT, "_loss", nan_from_step_five)
    assert train(tmp_path, "run") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training diverged at step 5: the loss is nan" in err and "last good checkpoint is kept" in err
    assert "--optim.lr" in err
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = torch.load(tmp_path / "run" / name, weights_only=True)
        assert ckpt["global_step"] == 3
        assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())


def test_a_run_that_diverges_before_saving_leaves_a_reusable_folder(tmp_path, capsys):
    assert train(tmp_path, "run", "--optim.lr", "1e6", "--optim.weight_decay", "0", "--optim.warmup_steps", "1") == 2
    assert "nothing was saved" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert train(tmp_path, "run") == 0


def test_infinite_gradients_stop_training_before_they_reach_the_weights(tmp_path, monkeypatch, capsys):
    def inf_gradients(self, optimizer):
        if self.global_step == 1:
            next(self.model.parameters()).grad.fill_(float("inf"))
        return guard(self, optimizer)

    guard = LitGPT.on_before_optimizer_step
    monkeypatch.setattr(LitGPT, "on_before_optimizer_step", inf_gradients)
    assert train(tmp_path, "run") == 2
    assert "diverged at step 2: the gradient norm is inf" in capsys.readouterr().err


@pytest.mark.parametrize("scale", [100.0, 1e-3], ids=["above-the-limit", "within-it"])
@pytest.mark.parametrize("algorithm", [None, "norm", "value"])
def test_clipping_gives_the_same_gradients_as_torch_clipping(algorithm, scale):
    """LitGPT clips itself (so fused AdamW works under bf16, and it skips the pass that would multiply by 1.0);
    it must equal torch's own clipping to the bit."""
    import copy

    torch.manual_seed(0)
    module = LitGPT(asdict(tiny_config()), {})
    reference = copy.deepcopy(module.model)
    batch = torch.randint(0, 257, (4, 17))
    for model in (module.model, reference):
        (next_token_loss(model, batch) * scale).backward()
    module._grad_norm = torch.nn.utils.get_total_norm([p.grad for p in module.model.parameters()])
    module.configure_gradient_clipping(None, 0.5, algorithm)
    if algorithm == "value":
        torch.nn.utils.clip_grad_value_(reference.parameters(), 0.5)
    else:
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    for ours, theirs in zip(module.model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=0, atol=0)


def test_resuming_a_short_run_and_a_copied_folder_keeps_one_current_last_checkpoint(tmp_path):
    """last.ckpt is always the newest state: never a stale last.ckpt beside a last-v1.ckpt."""
    import shutil

    # No validation, so last.ckpt alone (the last step is validated otherwise).
    assert train(tmp_path, "short", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0") == 0
    assert sorted(p.name for p in (tmp_path / "short").glob("*.ckpt")) == ["last.ckpt"]
    assert run(main, ["--resume", str(tmp_path / "short"), "--trainer.max_steps", "4"]) == 0
    assert step(tmp_path / "short" / "last.ckpt") == 4

    assert train(tmp_path, "original") == 0  # validations at steps 3 and 6: best.ckpt and last.ckpt
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    best_score = _best_score(tmp_path / "copy" / "best.ckpt")
    assert run(main, ["--resume", str(tmp_path / "copy"), "--trainer.max_steps", "9"]) == 0
    assert sorted(p.name for p in (tmp_path / "copy").glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    assert step(tmp_path / "copy" / "last.ckpt") == 9
    assert _best_score(tmp_path / "copy" / "best.ckpt") <= best_score  # the moved folder kept its best score
    assert step(tmp_path / "original" / "last.ckpt") == 6  # the original is untouched


def step(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def _best_score(path: Path) -> float:
    callbacks = torch.load(path, weights_only=True)["callbacks"]
    return float(next(v for k, v in callbacks.items() if k.startswith("BestCheckpoint"))["best_model_score"])


def test_the_logged_step_axis_has_no_gap_or_duplicate_across_a_signal_and_resume(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    training_step = LitGPT.training_step

    def sigterm_during_step_three(self, batch, batch_idx):
        if self.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(LitGPT, "training_step", sigterm_during_step_three)
    assert train(tmp_path, "run") == 143
    monkeypatch.undo()
    assert run(main, ["--resume", str(tmp_path / "run")]) == 0
    steps = []
    for events_file in sorted((tmp_path / "run" / "tb").glob("events.out.tfevents.*")):
        events = EventAccumulator(str(events_file)).Reload()
        steps += [e.step for e in events.Scalars("train/loss")]
    assert sorted(steps) == list(range(1, 7)) and len(set(steps)) == len(steps)


def test_fused_adamw_updates_equal_the_per_tensor_loop():
    """The optimizer is fused on CPU too; its updates must be the ones the foreach implementation makes."""
    module = LitGPT(asdict(tiny_config()), {})
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"]
    torch.manual_seed(0)
    reference = [p.detach().clone().requires_grad_() for p in module.model.parameters()]
    loop = torch.optim.AdamW(
        [{"params": [r for r, p in zip(reference, module.model.parameters()) if p.dim() >= 2], "weight_decay": 0.1},
         {"params": [r for r, p in zip(reference, module.model.parameters()) if p.dim() < 2], "weight_decay": 0.0}],
        lr=optimizer.param_groups[0]["lr"], betas=optimizer.defaults["betas"], foreach=True,  # the schedule set lr
    )  # fmt: skip
    for _ in range(3):
        for p, r in zip(module.model.parameters(), reference):
            p.grad = torch.randn_like(p)
            r.grad = p.grad.clone()
        optimizer.step()
        loop.step()
    for p, r in zip(module.model.parameters(), reference):
        torch.testing.assert_close(p.detach(), r.detach(), atol=1e-6, rtol=1e-5)


def test_validation_batches_stay_cache_sized_on_a_cpu_and_large_on_a_gpu():
    from minigpt.training.datamodule import CPU_EVAL_LOGITS, MAX_EVAL_BATCH, eval_batch_size

    cpu = eval_batch_size(16, 64, 257, "cpu")  # the shakespeare_cpu model
    assert 16 < cpu and cpu * 64 * 257 <= CPU_EVAL_LOGITS
    assert eval_batch_size(16, 64, 257, "cuda") == MAX_EVAL_BATCH
    assert eval_batch_size(16, 1024, 50304, "cuda") == 16  # never below the training batch
    assert eval_batch_size(64, 128, 257, "cpu") == 64


def test_validation_loss_does_not_depend_on_the_evaluation_batch(tmp_path):
    """Validation runs in larger batches than training (`eval_batch_size`); the loss is the same mean over windows."""
    import lightning as L
    import numpy as np
    from torch.utils.data import DataLoader

    from minigpt.training.datamodule import FixedWindows

    rng = np.random.default_rng(0)
    rng.integers(0, 257, 5000).astype(np.uint16).tofile(tmp_path / "val.bin")
    windows = FixedWindows(tmp_path, "uint16", 32, 100)  # 100 windows: batches of 12 leave a short last one
    torch.manual_seed(0)
    module = LitGPT(asdict(tiny_config()), {})
    losses = []
    for batch in (12, 256):
        trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
        losses.append(trainer.validate(module, dataloaders=DataLoader(windows, batch_size=batch), verbose=False)[0]["val/loss"])
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


@pytest.mark.slow
def test_a_compiled_run_trains_like_an_eager_one_and_saves_the_same_weight_names(tmp_path):
    from torch._dynamo.utils import counters

    assert train(tmp_path, "eager", "--compile", "false") == 0
    assert not counters["stats"]["unique_graphs"]
    assert train(tmp_path, "compiled", "--compile", "true") == 0
    assert counters["stats"]["unique_graphs"] >= 2  # training and evaluation
    eager = torch.load(tmp_path / "eager" / "last.ckpt", weights_only=True)["state_dict"]
    compiled = torch.load(tmp_path / "compiled" / "last.ckpt", weights_only=True)["state_dict"]
    assert compiled.keys() == eager.keys()
    for name, weight in eager.items():
        torch.testing.assert_close(compiled[name], weight, atol=2e-5, rtol=1e-4, msg=name)


def test_the_device_side_guard_skips_a_bad_step_and_reports_it_at_the_next_log_step(tmp_path, monkeypatch, capsys):
    """On a GPU the guard never waits for the device: fused AdamW skips the bad step (found_inf) and the
    verdict is read later. Forced on here, on the CPU, whose fused AdamW honours found_inf too."""

    def inf_gradients(self, optimizer):
        if self.global_step == 1:
            next(self.model.parameters()).grad.fill_(float("inf"))
        return guard(self, optimizer)

    def report(self):
        finite.append(all(torch.isfinite(p).all() for p in self.model.parameters()))
        return original_report(self)

    guard, original_report, finite = LitGPT.on_before_optimizer_step, LitGPT.report_divergence, []
    monkeypatch.setattr(LitGPT, "on_before_optimizer_step", inf_gradients)
    monkeypatch.setattr(LitGPT, "report_divergence", report)
    monkeypatch.setattr(LitGPT, "_guard_on_device", lambda self, optimizer: True)
    assert train(tmp_path, "run", "--trainer.log_every_n_steps", "3") == 2
    assert "diverged at step 2: the gradient norm is inf" in capsys.readouterr().err
    assert finite == [True, True]  # read before the sanity check, then at step 3: the weights untouched by step 2
