"""Starting from pretrained weights and handing a model to Hugging Face, through the real commands: a tiny
random GPT-2 in Hugging Face's format -> `train --init` -> generate, attention -> `export` -> transformers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from minigpt import checkpoint
from minigpt import tokenizer as tok
from minigpt.cli import attention, export, generate, run
from minigpt.cli.train import main as train
from minigpt.hf import tokenizer as hf_tokenizer
from tests.helpers import REPO

transformers = pytest.importorskip("transformers")

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog, and Привет мир.\n" for i in range(300))
STEPS = [
    "--batch_size", "4", "--val_windows", "4", "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
    "--trainer.accelerator", "cpu", "--samples", "1", "--sample_tokens", "8", "--trainer.enable_progress_bar", "false",
]  # fmt: skip


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory) -> Path:
    """A tiny random GPT-2 saved as Hugging Face saves one (safetensors), with a byte-level tokenizer."""
    folder = tmp_path_factory.mktemp("gpt2")
    enc = tok.byte_tokenizer()
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=enc.n_vocab, activation_function="gelu_new",
        bos_token_id=tok.eot_id(enc), eos_token_id=tok.eot_id(enc),
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
    hf_tokenizer.save(enc, folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(TEXT)
    return path


def common(tmp_path: Path, corpus: Path) -> list[str]:
    return ["--data", str(corpus), "--cache_dir", str(tmp_path / "cache"), *STEPS]


def test_fine_tuning_starts_from_the_pretrained_weights_and_its_result_samples_and_draws(tmp_path, gpt2_folder, corpus):
    out = tmp_path / "run"
    # A learning rate this small leaves the weights where they started: the run's weights are GPT-2's.
    code = run(train, ["--init", str(gpt2_folder), *common(tmp_path, corpus), "--out_dir", str(out),
                       "--model.block_size", "32", "--optim.lr", "1e-12"])  # fmt: skip
    assert code == 0
    tuned = checkpoint.load(out)
    assert (tuned.model.config.activation, tuned.model.config.n_layer, tuned.model.config.block_size) == ("gelu_tanh", 2, 32)
    original = transformers.GPT2LMHeadModel.from_pretrained(gpt2_folder).eval()
    ids = torch.tensor([tok.encode(tuned.tokenizer, TEXT[:40])[:32]])
    with torch.no_grad():
        torch.testing.assert_close(tuned.model(ids), original(ids).logits, atol=1e-4, rtol=0)
    assert run(generate.main, ["--ckpt", str(out), "--prompt", "line", "--max_new_tokens", "5", "--seed", "1"]) == 0
    assert run(attention.main, ["--ckpt", str(out), "--prompt", "the quick fox", "--out", str(tmp_path / "maps")]) == 0
    assert (tmp_path / "maps" / "overview.png").is_file()
    # default.yaml trains from scratch with Muon, whose step ignores --optim.lr: fine-tuning takes AdamW
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["name"] == "adamw"


def test_fine_tuning_uses_muon_only_when_asked(tmp_path, gpt2_folder, corpus):
    out = tmp_path / "run"
    code = run(train, ["--init", str(gpt2_folder), *common(tmp_path, corpus), "--out_dir", str(out),
                       "--model.block_size", "32", "--optim.name", "muon"])  # fmt: skip
    assert code == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["name"] == "muon"


def test_generate_and_attention_read_a_hugging_face_folder_directly(tmp_path, gpt2_folder, capsys):
    assert run(generate.main, ["--ckpt", str(gpt2_folder), "--prompt", "line", "--max_new_tokens", "5", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("line")
    assert run(attention.main, ["--ckpt", str(gpt2_folder), "--prompt", "the quick fox", "--out", str(tmp_path / "m")]) == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model.n_layer", "3"], "--model.n_layer 3 contradicts --init"),
        (["--tokenizer", "bytes"], "--tokenizer does not combine with --init"),
        (["--model.block_size", "128"], "is longer than the 64 positions of --init"),
    ],
)  # fmt: skip
def test_settings_that_contradict_the_pretrained_model_are_one_line_errors(tmp_path, gpt2_folder, corpus, capsys, extra, message):
    code = run(train, ["--init", str(gpt2_folder), *common(tmp_path, corpus), "--out_dir", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_a_pretrained_start_from_python_takes_the_models_shape_and_refuses_what_the_command_refuses(gpt2_folder, corpus):
    from minigpt.errors import MiniGPTError
    from minigpt.training.config import TrainConfig
    from minigpt.training.finetune import pretrained_start

    config, start = pretrained_start(TrainConfig.load(init=str(gpt2_folder), data=str(corpus)))
    assert (config.model.n_layer, config.model.block_size) == (2, 64) and start.model.config.n_embd == 32
    assert config.tokenizer.startswith(f"from:{gpt2_folder}#")
    with pytest.raises(MiniGPTError, match="--model.n_layer 3 contradicts --init"):
        pretrained_start(TrainConfig.load(init=str(gpt2_folder), data=str(corpus), model={"n_layer": 3}))


def test_init_and_resume_do_not_combine(tmp_path, gpt2_folder, corpus, capsys):
    assert run(train, [*common(tmp_path, corpus), "--out_dir", str(tmp_path / "run"), "--model.block_size", "32"]) == 0
    capsys.readouterr()
    assert run(train, ["--resume", str(tmp_path / "run"), "--init", str(gpt2_folder)]) == 2
    assert "--init starts a new run and --resume continues one" in capsys.readouterr().err


def test_a_pretrained_run_resumes_with_the_config_that_started_it(tmp_path, gpt2_folder, corpus, capsys):
    # The config names a tokenizer, a shape and a context that --init overrides (the source has 2 layers and 64
    # positions): resuming with it continues the run as it was, and only options given one by one are checked.
    config = tmp_path / "fine.yaml"
    config.write_text(f"init: {gpt2_folder}\ntokenizer: bytes\nmodel:\n  n_layer: 4\n  block_size: 128\n")
    out = tmp_path / "run"
    assert run(train, ["--config", str(config), *common(tmp_path, corpus), "--out_dir", str(out)]) == 0
    assert run(train, ["--config", str(config), "--resume", str(out), "--trainer.max_steps", "6"]) == 0
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 6
    resumed = yaml.safe_load((out / "config.yaml").read_text())
    assert resumed["tokenizer"].startswith("from:") and resumed["model"]["n_layer"] == 2
    assert resumed["model"]["block_size"] == 64
    capsys.readouterr()
    assert run(train, ["--config", str(config), "--resume", str(out), "--model.n_layer", "4"]) == 2
    assert "--model.n_layer cannot change when resuming (the run has 2, asked 4)" in capsys.readouterr().err
    # A whole group was silently dropped; now all of its values are checked, the config's too (block_size 128)
    assert run(train, ["--config", str(config), "--resume", str(out), "--model", '{"n_layer": 4}']) == 2
    assert "cannot change when resuming" in capsys.readouterr().err


def test_an_exported_run_loads_in_transformers_with_equal_logits_and_the_readme_snippet_runs(tmp_path, corpus):
    out = tmp_path / "run"
    # The README's snippet asks for 40 new tokens after a 6-byte prompt: the context must hold them.
    assert run(train, [*common(tmp_path, corpus), "--out_dir", str(out), "--model.block_size", "64",
                       "--model.n_layer", "1", "--model.n_embd", "32", "--model.n_head", "2"]) == 0  # fmt: skip
    assert run(export.main, ["--ckpt", str(out), "--out", str(tmp_path / "hf")]) == 0
    ours = checkpoint.load(out)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    text = "the lazy dog, Привет"
    ids = tok.encode(ours.tokenizer, text)
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(text)["input_ids"] == ids
    with torch.no_grad():
        torch.testing.assert_close(theirs(torch.tensor([ids])).logits, ours.model(torch.tensor([ids])), atol=1e-4, rtol=0)
    snippet = re.search(r"## Export to Hugging Face.*?```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    code = snippet.group(1).replace('"my_model"', repr(str(tmp_path / "hf")))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-2000:]
