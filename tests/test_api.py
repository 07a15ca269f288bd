"""The Python API gives what the commands give: the same samples, maps, files, scores and exports, from one
`minigpt.load`; and its mistakes are one-line `MiniGPTError`s."""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import minigpt
from minigpt.cli import run
from minigpt.cli.attention import main as attention_main
from minigpt.cli.eval import main as eval_main
from minigpt.errors import MiniGPTError
from minigpt.inspection import ablation, lens, maps, patching, report
from minigpt.sample import SamplingSettings, generate
from tests.helpers import environment

PROMPT = "the quick brown fox jumps over the lazy dog"


@pytest.fixture
def lm(tiny_checkpoint: Path) -> minigpt.MiniGPT:
    return minigpt.load(tiny_checkpoint)


def test_generate_is_the_samplers_completion(lm):
    settings = SamplingSettings(max_new_tokens=24, temperature=1.0, top_k=20, seed=7)
    expected = generate(lm.model, lm.tokenizer, PROMPT, settings)[0]
    assert lm.generate(PROMPT, max_new_tokens=24, temperature=1.0, top_k=20, seed=7) == expected


def test_stream_pieces_make_the_generated_text(lm):
    pieces = list(lm.stream(PROMPT, max_new_tokens=24, seed=3))
    assert len(pieces) > 1 and "".join(pieces) == lm.generate(PROMPT, max_new_tokens=24, seed=3)


def test_samples_are_the_batch_the_sampler_draws(lm):
    expected = generate(lm.model, lm.tokenizer, PROMPT, SamplingSettings(max_new_tokens=16, num_samples=3, seed=5))
    assert lm.samples(PROMPT, n=3, max_new_tokens=16, seed=5) == expected


def test_a_string_stop_is_one_stop_string(lm):
    text = lm.generate(PROMPT, max_new_tokens=40, temperature=0, stop="e")
    assert "e" not in text


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda lm: lm.generate(PROMPT, max_tokens=5), "unknown sampling option 'max_tokens'"),
        (lambda lm: lm.generate(PROMPT, num_samples=2), "use samples(prompt, n=...)"),
        (lambda lm: lm.generate(PROMPT, temperature=-1), "temperature"),
        (lambda lm: lm.attention(""), "the text is empty"),
        (lambda lm: lm.attention(PROMPT, layers=[5]), "layer 5 does not exist"),
        (lambda lm: lm.attention(PROMPT).top_heads("loss_change"), "unknown statistic 'loss_change'"),
        (lambda lm: lm.attention(PROMPT).logit_lens(k=0), "k must be a whole number from 1"),
        (lambda lm: lm.attention("a cat").patch("a dogs", "."), "has 5 tokens and the corrupted one 6"),
        (lambda lm: lm.attention("a cat").patch("a cow", "ab"), "the answer 'ab' is 2 tokens"),
        (lambda lm: lm.attention("a cat").patch("a cow", ".", wrong=""), "the wrong '' is 0 tokens"),
        (lambda lm: lm.attention("a cat").patch(b"a cow", "."), "the corrupted text must be a str, got bytes"),
        (lambda lm: lm.eval("no/such/corpus.txt"), "not found"),
        # Found by attacking the API: each was a raw TypeError, AttributeError or torch error, or a silent result.
        (lambda lm: lm.attention(PROMPT, layers=[]), "layers is empty: choose at least one layer"),
        (lambda lm: lm.attention(PROMPT, heads=[1.5]), "each of heads must be a whole number, got 1.5"),
        (lambda lm: lm.attention(PROMPT, layers=0), "layers must be a list of whole numbers"),
        (lambda lm: lm.attention(PROMPT, layers="0"), "layers must be a list of whole numbers"),
        (lambda lm: lm.attention(PROMPT, layers=np.array(1)), "layers must be a list of whole numbers (or None for all), got array(1)"),
        (lambda lm: lm.attention(PROMPT, heads=torch.tensor(1)), "heads must be a list of whole numbers (or None for all), got tensor(1)"),
        (lambda lm: lm.attention(PROMPT, aggregate=np.array(["mean"])), "unknown aggregate array(['mean']"),
        (lambda lm: lm.attention("\ud800"), "the text is not valid Unicode: a lone surrogate '\\ud800' at character 0"),
        (lambda lm: lm.generate("ab\udcff"), "the prompt is not valid Unicode"),
        (lambda lm: lm.generate(PROMPT, stop="\ud800"), "the stop string is not valid Unicode"),
        (lambda lm: lm.attention(PROMPT).top_heads("entropy", k=-1), "k must be at least 1, got -1"),
        (lambda lm: lm.attention(PROMPT).top_heads("entropy", k=None), "k must be a whole number, got None"),
        (lambda lm: lm.attention(PROMPT).save("x", top=1.5), "top must be a whole number, got 1.5"),
        (lambda lm: lm.attention(PROMPT).save(None), "the folder must be a path"),
        (lambda lm: lm.attention(PROMPT).ablate(windows=4), "give data (a corpus) with windows"),
        (lambda lm: lm.attention(PROMPT).ablate(5), "the data must be a path"),
        (lambda lm: lm.attention(PROMPT).ablate("x.txt", windows=0), "windows must be at least 1, got 0"),
        (lambda lm: lm.attention(PROMPT).showing(lens="oops"), "logitlens must be what logit_lens() returns, got str"),
        (lambda lm: lm.eval(None), "the data must be a path"),
        (lambda lm: lm.eval(b"x"), "the data must be a path (a str or pathlib.Path), got b'x'"),
        (lambda lm: lm.eval("x.txt", stride=1.5), "stride must be a whole number, got 1.5"),
        (lambda lm: lm.eval("x.txt", batch_size="8"), "batch_size must be a whole number, got '8'"),
        (lambda lm: lm.eval("x.txt", val_fraction=0.5), "give it with split='val' or 'train'"),
    ],
)
def test_mistakes_are_one_line_user_errors(lm, call, needle):
    with pytest.raises(MiniGPTError) as err:
        call(lm)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_loading_what_is_not_there_is_a_user_error_in_the_notebooks_words(tmp_path):
    with pytest.raises(MiniGPTError, match="not found: give a training run's folder, or its last.ckpt or best.ckpt") as err:
        minigpt.load(tmp_path / "nothing.ckpt")
    assert "--" not in str(err.value)  # a notebook has no command-line options to pass
    (tmp_path / "empty").mkdir()
    with pytest.raises(MiniGPTError, match=r"'.*/empty' holds no checkpoint \(best.ckpt or last.ckpt\)"):
        minigpt.load(tmp_path / "empty")  # said "checkpoint .../best.ckpt not found: give a training run's folder"


@pytest.mark.parametrize(
    ("device", "needle"),
    [("gpu", "device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"), ("meta", "got 'meta'"), ("", "got ''"),
     (None, "device must be auto, cpu, cuda, cuda:N or mps, got NoneType"), (5, "got int"), ("cuda:x", "got 'cuda:x'")],
)  # fmt: skip
def test_a_device_that_is_not_one_is_a_user_error(tiny_checkpoint, device, needle):
    with pytest.raises(MiniGPTError) as err:
        minigpt.load(tiny_checkpoint, device=device)
    assert needle in str(err.value)


def test_device_names_torch_would_misread_are_user_errors_and_indexed_ones_work(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    from minigpt.device import resolve

    for name in ("cuda:\u00b2", "cuda:\u0660", "cuda:", "cuda:01", "cpu:1"):
        with pytest.raises(MiniGPTError, match="must be auto, cpu, cuda, cuda:N or mps"):
            resolve(name)
    assert resolve("cuda:1") == torch.device("cuda", 1) and resolve(torch.device("cpu", 0)) == torch.device("cpu", 0)
    with pytest.raises(MiniGPTError, match="device cuda:2 does not exist: this machine has 2 GPU"):
        resolve("cuda:2")


def test_a_gpu_that_is_not_here_is_a_user_error(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MiniGPTError, match="device cuda was asked for but is not available here; use cpu or auto"):
        minigpt.load(tiny_checkpoint, device="cuda")
    assert minigpt.load(tiny_checkpoint, device="auto").device.type in ("cpu", "mps")


def test_numpy_numbers_and_paths_are_what_they_hold(lm, tmp_path):
    import numpy as np

    assert lm.generate(PROMPT, max_new_tokens=np.int64(6), temperature=np.float64(0.5), seed=np.int64(2)) == lm.generate(
        PROMPT, max_new_tokens=6, temperature=0.5, seed=2
    )
    att = lm.attention(PROMPT, layers=[np.int64(0)], heads=(0,))
    assert att.top_heads("entropy", np.int64(1)) == att.top_heads("entropy", 1)
    assert [p.name for p in att.save(tmp_path / "maps") if p.name.startswith("layer_")] == ["layer_0.png"]
    for layers, heads in ((np.array([0]), torch.tensor([1, 0])), ([torch.tensor(0)], range(2)), ({0}, np.arange(2))):
        assert torch.equal(lm.attention(PROMPT, layers=layers, heads=heads).weights, lm.attention(PROMPT).weights)
    assert any(p.name == "layer_0_head_0.png" for p in att.save(tmp_path / "heads", per_head=np.bool_(True)))
    corpus = tmp_path / "text.txt"
    corpus.write_text(PROMPT * 40)
    assert lm.eval(corpus, split="val", val_fraction=np.float32(0.1)) == lm.eval(corpus, split="val", val_fraction=0.1)


def test_a_model_with_nan_weights_gives_no_nan_numbers(lm, tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text(PROMPT * 20)
    att = lm.attention(PROMPT)
    with torch.no_grad():
        lm.model.transformer.h[0].attn.c_attn.weight[0, 0] = float("nan")
    for call in (lambda: lm.eval(str(corpus)), lambda: lm.attention(PROMPT), att.ablate, lambda: lm.generate(PROMPT)):
        with pytest.raises(MiniGPTError, match="the model's output is not finite"):
            call()


def test_attention_is_the_extracted_maps_and_statistics(lm):
    att = lm.attention(PROMPT)
    extracted = maps.extract(lm.model, att.analysis.maps.ids)
    assert torch.equal(att.weights, extracted.weights)
    assert torch.equal(att.stats["previous_token"], maps.head_stats(lm.model, extracted.weights).previous_token)
    assert att.tokens == report.token_strings(lm.tokenizer, extracted.ids)
    assert att.top_heads("entropy", 2) == maps.top_heads(att.stats["entropy"], 2, largest=False)


def test_save_writes_the_files_of_the_attention_command(lm, tiny_checkpoint, tmp_path):
    assert run(attention_main, ["--ckpt", str(tiny_checkpoint), "--prompt", PROMPT, "--out", str(tmp_path / "cli"), "--ablate"]) == 0
    written = lm.attention(PROMPT).ablate().save(tmp_path / "api")
    assert sorted(p.name for p in written) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    heads = [json.loads((tmp_path / side / "heads.json").read_text()) for side in ("cli", "api")]
    heads[0]["ablation"].pop("on"), heads[1]["ablation"].pop("on")  # "the prompt" / "the text"
    assert heads[0] == heads[1]


def test_ablate_measures_each_head_on_the_text(lm):
    att = lm.attention(PROMPT)
    ablated = att.ablate()
    windows = ablation.text_windows(lm.tokenizer.encode_ordinary(PROMPT), lm.config.block_size)
    assert torch.equal(ablated.stats["loss_change"], ablation.head_importance(lm.model, windows).loss_change)
    assert "loss_change" not in att.stats  # the original is left as it was
    assert ablated.top_heads("loss_change", 1)[0][2] == float(ablated.stats["loss_change"].max())


def test_logit_lens_reads_the_tokens_the_maps_show(lm):
    att = lm.attention(PROMPT)
    expected = lens.logit_lens(lm.model, lm.tokenizer, att.analysis.maps.ids, 4)
    shown = att.logit_lens(4)
    assert torch.equal(shown.probs, expected.probs) and shown.top == expected.top and shown.tokens == att.tokens


def test_patch_is_activation_patching_of_the_text_into_the_corrupted_one(lm):
    got = lm.attention("the cat sat").patch("the dog sat", " ", wrong=".")
    ids = [lm.tokenizer.encode_ordinary(t) for t in ("the cat sat", "the dog sat", " ", ".")]
    expected = patching.activation_patching(lm.model, lm.tokenizer, ids[0], ids[1], ids[2][0], ids[3][0])
    assert torch.equal(got.heads, expected.heads) and torch.equal(got.residual, expected.residual)
    assert got.metric == "logit(' ') - logit('.') at the last position"


def test_showing_the_lens_and_patching_saves_what_the_command_writes(lm, tiny_checkpoint, tmp_path):
    options = ["--logit_lens", "3", "--corrupt", "the dog sat", "--answer", " ", "--wrong", "."]
    assert run(attention_main, ["--ckpt", str(tiny_checkpoint), "--prompt", "the cat sat", "--out", str(tmp_path / "cli"), *options]) == 0
    att = lm.attention("the cat sat")
    assert att.lens is None and att.patching is None
    shown = att.showing(lens=att.logit_lens(3), patching=att.patch("the dog sat", " ", wrong="."))
    written = shown.save(tmp_path / "api")
    assert {"logit_lens.png", "patching_heads.png", "patching_residual.png"} <= {p.name for p in written}
    assert sorted(p.name for p in written) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    heads = [json.loads((tmp_path / side / "heads.json").read_text()) for side in ("cli", "api")]
    assert heads[0] == heads[1] and "patching" in heads[0]
    page = (tmp_path / "api" / "attention.html").read_text()
    assert page == (tmp_path / "cli" / "attention.html").read_text()
    assert shown.showing().lens is shown.lens  # showing nothing new keeps what is shown


def test_the_notebook_view_is_the_attention_page_in_a_frame(lm):
    att = lm.attention(PROMPT + " </script>").ablate()
    shown = att._repr_html_()
    frame = re.fullmatch(r'<iframe [^>]*srcdoc="([^"]*)"[^>]*></iframe>', shown)
    assert frame, shown[:200]
    a = att.analysis
    assert html.unescape(frame.group(1)) == report.page_html(a.page, a.tokens, a.stats, a.importance)
    assert "http://" not in shown and "https://" not in shown  # offline
    lensed = att.showing(lens=att.logit_lens())
    frame = re.fullmatch(r'<iframe [^>]*srcdoc="([^"]*)"[^>]*></iframe>', lensed._repr_html_())
    a = lensed.analysis
    assert html.unescape(frame.group(1)) == report.page_html(a.page, a.tokens, a.stats, a.importance, lens=a.lens)


def test_eval_scores_what_the_eval_command_prints(lm, tiny_checkpoint, tmp_path, capsys):
    corpus = tmp_path / "text.txt"
    corpus.write_text("".join(f"{i} {PROMPT}\n" for i in range(40)))
    assert run(eval_main, ["--ckpt", str(tiny_checkpoint), "--data", str(corpus), "--split", "all"]) == 0
    printed = capsys.readouterr().out
    result = lm.eval(str(corpus))  # the command's default split, all
    assert f"loss {result.loss:.4f} nats/token, {result.bits_per_byte:.4f} bits/byte" in printed
    assert f"{result.tokens:,} tokens, {result.bytes:,} bytes" in printed and str(result) in printed


def test_export_round_trips_through_load(lm, tmp_path):
    folder = lm.export(tmp_path / "hf")
    again = minigpt.load(folder)
    ids = torch.tensor([lm.tokenizer.encode_ordinary(PROMPT)[-lm.config.block_size :]])
    assert torch.allclose(again.model(ids), lm.model(ids), atol=1e-5)
    assert again.tokenizer.encode_ordinary(PROMPT) == lm.tokenizer.encode_ordinary(PROMPT)


def test_train_takes_a_config_or_options_not_both():
    with pytest.raises(MiniGPTError, match="not both"):
        minigpt.train(minigpt.TrainConfig.load(), seed=1)


def test_a_count_from_numpy_or_torch_is_the_number_it_holds(lm):
    att = lm.attention(PROMPT)
    assert att.logit_lens(torch.tensor(2)).table() == att.logit_lens(np.int64(2)).table() == att.logit_lens(2).table()


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (5, "the config must be a path (a str or pathlib.Path), got 5"),
        (lambda c: dataclasses.replace(c, model={"n_layer": 2}), "model must be the ModelConfig record, got dict"),
        (lambda c: dataclasses.replace(c, optim=None), "optim must be the OptimConfig record, got NoneType"),
        (lambda c: dataclasses.replace(c, trainer={**c.trainer, "gradient_clip_val": "x"}),
         "--trainer.gradient_clip_val must be a number, 0 or more, got 'x'"),
    ],
    ids=["int", "model-dict", "optim-none", "clip-text"],
)  # fmt: skip
def test_a_config_of_the_wrong_kind_is_one_line(config, needle):
    """Each was a TypeError or AttributeError from deep inside."""
    with pytest.raises(MiniGPTError) as err:
        minigpt.train(config(minigpt.TrainConfig.load()) if callable(config) else config)
    assert str(err.value).startswith(needle)


def test_numpy_numbers_and_paths_in_a_config_are_the_values_they_hold(tmp_path):
    """np.float32(5e-3) trained at 0.004999999888; an edited config's np.int64 seed or Path data was refused."""
    config = minigpt.TrainConfig.load(optim={"lr": np.float32(5e-3)}, val_fraction=np.float32(0.1))
    assert (config.optim.lr, config.val_fraction) == (5e-3, 0.1)
    assert minigpt.TrainConfig.load(optim={"lr": torch.tensor(5e-3)}).optim.lr == 5e-3
    edited = dataclasses.replace(config, seed=np.int64(1), data=tmp_path / "corpus.txt")
    edited.trainer["val_check_interval"] = np.int64(15)  # reached yaml.safe_dump, which cannot write it
    edited.validate()
    assert (edited.seed, edited.data) == (1, str(tmp_path / "corpus.txt")) and type(edited.seed) is int
    assert type(edited.trainer["val_check_interval"]) is int


def test_training_from_python_leaves_the_process_as_it_found_it(tmp_path, monkeypatch):
    """The thread count, random generators, warning filters and environment were the run's afterwards; a later
    `minigpt train` started from the notebook took it for its DDP launcher and waited 30 s for it to exit."""
    (tmp_path / "corpus.txt").write_text("".join(f"{i} {PROMPT}\n" for i in range(300)))
    monkeypatch.chdir(tmp_path)
    names = ("MINIGPT_RUN", "PL_GLOBAL_SEED", "PL_SEED_WORKERS")
    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.pytorch.utilities.rank_zero")]

    def state():
        return (torch.get_num_threads(), list(warnings.filters), {n: os.environ.get(n) for n in names},
                [(lg.handlers[:], lg.filters[:], lg.propagate, lg.level) for lg in loggers],
                torch.random.get_rng_state(), np.random.get_state()[1].tolist(), random.getstate())  # fmt: skip

    torch.manual_seed(123)
    before = state()
    minigpt.train(data="corpus.txt", model={"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32}, batch_size=4,
                  val_windows=4, samples=0, threads=before[0] + 1, cache_dir=str(tmp_path / "cache"),
                  trainer={"max_steps": 4, "val_check_interval": 2, "accelerator": "cpu"})  # fmt: skip
    after = state()
    assert after[:4] == before[:4] and torch.equal(after[4], before[4]) and after[5:] == before[5:]


def test_an_inspection_in_one_thread_waits_for_the_model_held_by_another(lm):
    """Ablation hooks the model; another thread's samples ran through those hooks and changed silently."""
    att, order = lm.attention(PROMPT), []
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with maps.in_use(lm.model):
            holding.set()
            release.wait()
            order.append("released")

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait()
    ablating = threading.Thread(target=lambda: (att.ablate(), order.append("ablated")))
    ablating.start()
    ablating.join(timeout=0.5)  # ample for a tiny model's ablation, were it not waiting
    release.set()
    holder.join()
    ablating.join()
    assert order == ["released", "ablated"]


def test_the_package_offers_its_api_by_name():
    assert set(minigpt.__all__) >= {"load", "train", "MiniGPT", "Attention", "TrainConfig", "SamplingSettings"}
    assert all(getattr(minigpt, name) is not None for name in minigpt.__all__)
    with pytest.raises(AttributeError):
        minigpt.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda lm: lm.generate(123), "the prompt must be a str, got int"),
        (lambda lm: lm.generate("a", stop=5), "stop must be a sequence of strings"),
        (lambda lm: lm.generate("a", temperature="hot"), "temperature must be a number, got 'hot'"),
        (lambda lm: lm.generate("a", max_new_tokens=2.5), "max_new_tokens must be a whole number"),
        (lambda lm: lm.generate("a", top_k=True), "top_k must be a whole number or None, got True"),
        (lambda lm: lm.samples("a", n="2"), "num_samples must be a whole number, got '2'"),
        (lambda lm: lm.attention(b"bytes"), "the text must be a str, got bytes"),
        (lambda lm: lm.attention("hello", aggregate="bogus"), "unknown aggregate 'bogus'"),
        (lambda lm: lm.export("/dev/null/inside"), "cannot export to /dev/null/inside"),
        # A NUL raised ValueError and a lone surrogate UnicodeEncodeError, from deep inside each call
        (lambda lm: minigpt.load("a\x00b"), "the model source 'a\\x00b' holds a NUL character"),
        (lambda lm: minigpt.load("a\ud800b"), "the model source is not valid Unicode: a lone surrogate"),
        (lambda lm: lm.eval("a\x00b"), "the data 'a\\x00b' holds a NUL character"),
        (lambda lm: lm.export("a\x00b"), "the out_dir 'a\\x00b' holds a NUL character"),
        (lambda lm: lm.attention("hello").ablate("a\x00b"), "the data 'a\\x00b' holds a NUL character"),
        (lambda lm: lm.attention("hello").save("a\x00b"), "the folder 'a\\x00b' holds a NUL character"),
    ],
)
def test_values_of_the_wrong_kind_from_python_are_one_line_user_errors(lm, call, needle):
    with pytest.raises(MiniGPTError) as err:
        call(lm)
    assert needle in str(err.value) and "\n" not in str(err.value)


TRAIN_UNTIL_STOPPED = """
import minigpt
try:  # a notebook's loop over settings: its Ctrl-C must not be caught as one failed setting
    minigpt.train(data="corpus.txt", model={"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32}, batch_size=4,
                  val_windows=4, samples=0, trainer={"max_steps": 100000, "val_check_interval": 20,
                  "log_every_n_steps": 10, "accelerator": "cpu"})
except Exception as err:
    raise SystemExit(f"caught as an Exception: {err!r}")
"""


@pytest.mark.e2e
def test_ctrl_c_in_python_training_saves_the_step_and_says_how_to_resume(tmp_path):
    """A notebook's interrupt is a SIGINT: training stops at a step boundary with last.ckpt saved, as the command does,
    and raises a KeyboardInterrupt, which a notebook's `except Exception` does not catch."""
    (tmp_path / "corpus.txt").write_text("".join(f"{i} {PROMPT}\n" for i in range(2000)))
    env = {**environment(), "MINIGPT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_UNTIL_STOPPED], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # wait until it is really training
        lines.append(line)
        if line.startswith("step 40/"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 1 and "caught as an Exception" not in rest, "".join(lines) + rest
    assert "Interrupted: training stopped; step" in rest and "--resume" in rest, rest
    saved = torch.load(tmp_path / "runs" / "default" / "last.ckpt", weights_only=True)["global_step"]
    assert saved >= 40
    assert minigpt.load(tmp_path / "runs" / "default").config.n_layer == 1  # the saved run loads


def test_a_source_name_the_file_system_refuses_is_one_line() -> None:
    with pytest.raises(MiniGPTError, match="File name too long"):
        minigpt.load("x" * 300)


def test_saving_over_an_earlier_analysis_leaves_only_the_new_ones_files(lm, tmp_path):
    """A folder holds one analysis: the importance.png and per-head PNGs that an earlier save's heads.json lists do
    not linger beside a later one's page; a file that no report wrote stays, whatever its name."""
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "layer_11.png").write_text("mine")  # named like a report's, but no report wrote it
    (folder / "notes.txt").write_text("mine too")
    first = lm.attention(PROMPT).ablate().save(folder, per_head=True)
    assert "importance.png" in json.loads((folder / "heads.json").read_text())["files"]
    written = lm.attention("a cat", layers=[1]).save(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted([p.name for p in written] + ["layer_11.png", "notes.txt"])
    assert len(first) > len(written) and (folder / "layer_11.png").read_text() == "mine"


def test_a_heads_json_without_a_file_list_removes_nothing(lm, tmp_path):
    folder = tmp_path / "maps"
    lm.attention(PROMPT).ablate().save(folder)
    heads = json.loads((folder / "heads.json").read_text())
    (folder / "heads.json").write_text(json.dumps({k: v for k, v in heads.items() if k != "files"}))  # an older report's
    lm.attention(PROMPT).save(folder)
    assert (folder / "importance.png").exists()


def test_a_heads_json_that_is_no_reports_does_not_stop_a_save(lm, tmp_path):
    """A deeply nested one raised a RecursionError; a FIFO blocked the save."""
    import os

    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "heads.json").write_text("[" * 200_000)
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "heads.json")
    for folder in ("deep", "fifo"):
        assert lm.attention(PROMPT).save(tmp_path / folder) and (tmp_path / folder / "heads.json").is_file()
