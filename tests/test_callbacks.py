"""minigpt.training.callbacks.views.AttentionLogger inside a real (tiny) Lightning run, read back from TensorBoard's files."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import SingleDeviceStrategy
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from minigpt import tokenizer
from minigpt.inspection import maps as attention
from minigpt.model import GPT
from minigpt.training.callbacks.views import AttentionLogger
from tests.helpers import tiny_config


class TinyModule(L.LightningModule):
    """Just enough of a LightningModule around a GPT (kept as `self.model`, as in minigpt.training.module)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = GPT(tiny_config(dropout=0.1))

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self.model(batch[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self._loss(batch)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_attention_logger_writes_the_overview_and_every_heads_statistics_at_each_validation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sequences = torch.randint(0, 256, (8, 17))
    module = TinyModule()
    trainer = L.Trainer(
        max_steps=4, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0,
        logger=TensorBoardLogger(tmp_path, name="tb", version=""), callbacks=[AttentionLogger(
            tokenizer.byte_tokenizer(), "To be, or not to be", layers=[1], every_s=0)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, DataLoader(sequences, batch_size=2), DataLoader(sequences[:2], batch_size=2))

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert "attention/overview" in tags["images"]
    assert [e.step for e in events.Images("attention/overview")] == [2, 4]
    for kind in ("previous_token", "first_token", "induction", "entropy"):
        for tag in (f"attention/{kind}/L{l}H{h}" for l in range(2) for h in range(2)):  # every layer, not just 1
            values = events.Scalars(tag)
            assert [e.step for e in values] == [2, 4], tag
            assert all(0 <= e.value <= 1 for e in values) or kind == "entropy"
    # What was logged at a step is the score of the model as it was then.
    induction = [e.value for e in events.Scalars("attention/induction/L1H1")]
    assert induction[-1] == pytest.approx(float(attention.induction_score(module.model)[1, 1]), abs=1e-6)


def test_loggers_skip_a_diverged_model_with_a_warning_instead_of_crashing(tmp_path: Path, caplog) -> None:
    from types import SimpleNamespace

    from minigpt.training.callbacks.views import SampleLogger

    module = TinyModule()
    with torch.no_grad():
        module.model.transformer.wte.weight[0, 0] = float("nan")
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    trainer = SimpleNamespace(sanity_checking=False, global_step=3, loggers=[logger], strategy=SingleDeviceStrategy("cpu"))
    enc = tokenizer.byte_tokenizer()
    with caplog.at_level("WARNING"):
        for callback in (SampleLogger(enc), AttentionLogger(enc, "To be")):
            callback.on_validation_end(trainer, module)  # torch.multinomial would raise on NaN probabilities
    assert "non-finite weights" in caplog.text
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_loggers_say_once_that_they_are_off_under_a_sharding_strategy(tmp_path: Path, caplog) -> None:
    """Under FSDP each forward is a collective: rank 0 running the model alone would hang the run."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy

    from minigpt.training.callbacks.views import SampleLogger

    module, enc = TinyModule(), tokenizer.byte_tokenizer()
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    trainer = SimpleNamespace(sanity_checking=False, global_step=3, loggers=[logger], strategy=FSDPStrategy(), is_global_zero=True)
    with caplog.at_level("WARNING"):
        for callback in (SampleLogger(enc), AttentionLogger(enc, "To be")):
            callback.setup(trainer, module, "fit")
            callback.on_validation_end(trainer, module)
    assert caplog.text.count("which shards the model") == 2
    assert "samples are not logged under FSDPStrategy" in caplog.text
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


@pytest.mark.parametrize(("every_s", "steps"), [(0, [2, 4, 6]), (3600, [6])], ids=["always", "hourly"])
def test_views_wait_every_s_from_the_start_and_the_final_model_is_always_shown(tmp_path: Path, every_s, steps) -> None:
    torch.manual_seed(0)
    sequences = torch.randint(0, 256, (8, 17))
    trainer = L.Trainer(
        max_steps=6, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0,
        logger=TensorBoardLogger(tmp_path, name="tb", version=""), callbacks=[AttentionLogger(
            tokenizer.byte_tokenizer(), "To be", every_s=every_s)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(TinyModule(), DataLoader(sequences, batch_size=2), DataLoader(sequences[:2], batch_size=2))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    # Hourly: validations 2 and 4 come too soon after the start; the final model is shown all the same.
    assert [e.step for e in events.Images("attention/overview")] == steps


def test_attention_logger_draws_each_layer_with_the_probes_tokens_as_labels(tmp_path: Path, monkeypatch) -> None:
    import io

    import matplotlib.image
    import numpy as np

    from minigpt.inspection import heatmaps, report

    drawn = []
    layer_figure = heatmaps.layer_figure
    monkeypatch.setattr(heatmaps, "layer_figure", lambda maps, titles, tokens: drawn.append(list(tokens)) or layer_figure(maps, titles, tokens))
    sequences = torch.randint(0, 256, (4, 17))
    module = TinyModule()
    trainer = L.Trainer(
        max_steps=4, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0,
        logger=TensorBoardLogger(tmp_path, name="tb", version=""), callbacks=[AttentionLogger(
            tokenizer.byte_tokenizer(), "To be, or not", every_s=0)],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, DataLoader(sequences, batch_size=2), DataLoader(sequences[:2], batch_size=2))

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    assert {"attention/layer_0", "attention/layer_1"} <= set(events.Tags()["images"])
    assert [e.step for e in events.Images("attention/layer_1")] == [2, 4]
    assert drawn == [list("To be, or not")]  # laid out once in the run, then redrawn with each view's maps
    import copy
    import pickle

    logger = next(c for c in trainer.callbacks if isinstance(c, AttentionLogger))
    assert pickle.loads(pickle.dumps(logger)).ids == logger.ids and copy.deepcopy(logger)._canvas is None
    # The last view's images are what a fresh figure of the final model's maps shows.
    analysis = report.analyse(module.model, tokenizer.byte_tokenizer(), list(b"To be, or not"))
    titles = [heatmaps.column_title(c) for c in analysis.png.cols]
    for r in range(2):
        png = events.Images(f"attention/layer_{r}")[-1].encoded_image_string
        logged = np.round(matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3] * 255).astype(np.uint8)
        fresh = heatmaps.figure_pixels(layer_figure(analysis.png.maps[r], titles, analysis.tokens))
        assert np.array_equal(logged, fresh)


def test_the_attention_probe_is_a_window_of_varied_text_not_a_banner(tmp_path: Path) -> None:
    from minigpt.training.datamodule import TokenDataModule
    from minigpt.training.run import probe_text

    words = "the quick brown fox jumps over a lazy dog while seven wizards box and hum".split()
    prose = "\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(9)) for i in range(60))
    (tmp_path / "train.txt").write_text(prose * 3)
    (tmp_path / "val.txt").write_text("*" * 70 + "\n" + ("*" + " " * 68 + "*\n") * 8 + "*" * 70 + "\n" + prose)
    data = TokenDataModule(
        str(tmp_path / "train.txt"), "bytes", 32, 4, val_fraction=0.0, val_windows=8, seed=0, num_workers=0,
        cache_dir=str(tmp_path / "cache"),
        val_data=str(tmp_path / "val.txt"), progress=False,
    )  # fmt: skip
    probe = probe_text(data.prepare(), block_size=32)
    assert len(probe) == 32 and max(probe.count(c) for c in set(probe)) < len(probe) / 3, repr(probe)
