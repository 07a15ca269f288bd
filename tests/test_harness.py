"""Benchmark tasks through lm-evaluation-harness: the adapter's scores come from our forward pass and equal both a
brute-force sum and lm-eval's own Hugging Face backend on the exported model; tasks defined in local YAML over local
JSONL run offline; `minigpt eval --tasks` prints and saves them, and refuses what does not fit."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import minigpt
from minigpt import tokenizer
from minigpt.cli import run
from minigpt.cli.eval import main
from minigpt.model import GPT
from minigpt.sample import SamplingSettings, generate

harness = pytest.importorskip("minigpt.harness", reason="needs lm-eval: pip install 'minigpt[eval]'")
from lm_eval.api.instance import Instance  # noqa: E402

ROWS = [
    {"context": "To be, or not to", "choices": [" be", " see", " go"], "answer": 0},
    {"context": "ROMEO: O, she doth teach the torches to burn", "choices": [" bright!", " dim."], "answer": 0},
    {"context": "Good morrow, cousin.", "choices": [" Is the day so young?", " Farewell."], "answer": 1},
    {"context": "x" * 80, "choices": [" longer than the window", " y"], "answer": 1},  # left-truncated to 32
]
PAIRS = [(row["context"], choice) for row in ROWS for choice in row["choices"]] + [("", "Hello there")]
TEXTS = ["Now is the winter of our discontent made glorious summer by this sun of York. " * 3, "a"]


def requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def brute_force(model: GPT, enc, context: str, continuation: str) -> float:
    """The sum of log-softmax of the continuation's tokens, the context cut to the window from the left."""
    whole, start = tokenizer.encode(enc, context + continuation), tokenizer.encode(enc, context)
    if not start:  # an empty context: the continuation follows <|endoftext|>
        whole, start = [tokenizer.eot_id(enc)] + whole, [tokenizer.eot_id(enc)]
    n = len(whole) - len(start)
    ids = torch.tensor(whole[-(model.config.block_size + 1) :])
    with torch.no_grad():
        logprobs = F.log_softmax(model(ids[None, :-1])[0], dim=-1)
    return sum(logprobs[len(ids) - 1 - n + k, ids[len(ids) - n + k]].item() for k in range(n))


def test_loglikelihoods_are_the_sum_of_log_softmax_of_the_continuation(tiny_model: GPT) -> None:
    enc = tokenizer.byte_tokenizer()
    lm = harness.HarnessLM(tiny_model, enc, batch_size=3)

    scores = lm.loglikelihood(requests("loglikelihood", PAIRS))

    for (context, continuation), (logprob, _) in zip(PAIRS, scores, strict=True):
        assert logprob == pytest.approx(brute_force(tiny_model, enc, context, continuation), abs=1e-4)


def test_batch_size_does_not_change_the_loglikelihoods(tiny_model: GPT) -> None:
    enc = tokenizer.byte_tokenizer()
    one = harness.HarnessLM(tiny_model, enc, batch_size=1).loglikelihood(requests("loglikelihood", PAIRS))
    many = harness.HarnessLM(tiny_model, enc, batch_size=16).loglikelihood(requests("loglikelihood", PAIRS))
    assert [s for s, _ in one] == pytest.approx([s for s, _ in many], abs=1e-5)
    assert [g for _, g in one] == [g for _, g in many]


def test_a_continuation_the_model_predicts_greedily_is_marked_greedy(tiny_model: GPT) -> None:
    enc = tokenizer.byte_tokenizer()
    settings = SamplingSettings(max_new_tokens=2, temperature=0)
    # A random model's greedy bytes are often not UTF-8, which no text can ask for: take a prompt whose are ASCII.
    prompt, greedy = next(
        (p, g) for p in (f"line {i}:" for i in range(100)) if len(g := generate(tiny_model, enc, p, settings)[0]) == 2 and g.isascii()
    )
    other = "~" if greedy[0] != "~" else "!"  # its first token is not the argmax
    lm = harness.HarnessLM(tiny_model, enc)

    (_, is_greedy), (_, not_greedy) = lm.loglikelihood(requests("loglikelihood", [(prompt, greedy), (prompt, other)]))

    assert is_greedy and not not_greedy


def test_rolling_loglikelihood_predicts_every_token_once_in_windows(tiny_model: GPT) -> None:
    enc = tokenizer.byte_tokenizer()
    lm = harness.HarnessLM(tiny_model, enc)

    rolling = lm.loglikelihood_rolling(requests("loglikelihood_rolling", [(t,) for t in TEXTS]))

    # Each window of 32 inputs predicts its tokens; the last keeps a full window (lm-eval's rolling windows).
    ids = [tokenizer.eot_id(enc)] + tokenizer.encode(enc, TEXTS[0])
    expected, block = 0.0, tiny_model.config.block_size
    for end in range(1, len(ids), block):
        last = min(end + block, len(ids))
        start = max(last - 1 - block, 0)
        with torch.no_grad():
            logprobs = F.log_softmax(tiny_model(torch.tensor(ids[start : last - 1])[None])[0], dim=-1)
        expected += sum(logprobs[p - 1 - start, ids[p]].item() for p in range(end, last))
    assert rolling[0] == pytest.approx(expected, abs=1e-4)
    assert rolling[1] == pytest.approx(brute_force(tiny_model, enc, "", "a"), abs=1e-5)


def test_generate_until_is_our_greedy_sampler_cut_at_until(tiny_model: GPT) -> None:
    enc = tokenizer.byte_tokenizer()
    full = generate(tiny_model, enc, "To be", SamplingSettings(max_new_tokens=20, temperature=0))[0]
    lm = harness.HarnessLM(tiny_model, enc)

    plain, cut = lm.generate_until(requests("generate_until", [
        ("To be", {"until": [], "max_gen_toks": 20}), ("To be", {"until": [full[5:7]], "max_gen_toks": 20}),
    ]))  # fmt: skip

    assert plain == full
    assert cut == full[: full.index(full[5:7])]


def test_sampling_requests_are_refused_in_one_line(tiny_model: GPT) -> None:
    lm = harness.HarnessLM(tiny_model, tokenizer.byte_tokenizer())
    with pytest.raises(harness.MiniGPTError, match="greedily"):
        lm.generate_until(requests("generate_until", [("To be", {"until": ["\n"], "do_sample": True})]))


def test_the_adapter_agrees_with_lm_evals_hugging_face_backend_on_the_export(tmp_path: Path, tiny_model: GPT) -> None:
    """The same model exported and scored by lm-eval's HFLM gives the same log-likelihoods (1e-4)."""
    from lm_eval.models.huggingface import HFLM

    from minigpt.checkpoint import Loaded
    from minigpt.hf.export import export

    enc = tokenizer.byte_tokenizer()
    export(Loaded(tiny_model, enc, None), tmp_path / "hf")
    hf = HFLM(pretrained=str(tmp_path / "hf"), device="cpu", batch_size=4, dtype="float32")
    ours = harness.HarnessLM(tiny_model, enc, batch_size=4)

    pairs = requests("loglikelihood", PAIRS)
    assert [s for s, _ in ours.loglikelihood(pairs)] == pytest.approx([s for s, _ in hf.loglikelihood(pairs)], abs=1e-4)
    assert [g for _, g in ours.loglikelihood(pairs)] == [g for _, g in hf.loglikelihood(pairs)]
    texts = requests("loglikelihood_rolling", [(t,) for t in TEXTS])
    assert ours.loglikelihood_rolling(texts) == pytest.approx(hf.loglikelihood_rolling(texts), abs=1e-4)


def write_tasks(folder: Path) -> Path:
    """A multiple-choice task and a loglikelihood task over one local JSONL file, in YAML as lm-eval reads them."""
    folder.mkdir()
    data = folder / "lines.jsonl"
    data.write_text("".join(json.dumps({**row, "target": row["choices"][row["answer"]]}) + "\n" for row in ROWS))
    common = (
        f"dataset_path: json\ndataset_kwargs:\n  data_files: {{test: {json.dumps(str(data))}}}\n"
        f"  cache_dir: {json.dumps(str(folder / 'cache'))}\ntest_split: test\n"
        'doc_to_text: "{{context}}"\ntarget_delimiter: ""\n'
    )
    (folder / "choice.yaml").write_text(
        f"task: tiny_choice\n{common}output_type: multiple_choice\n"
        'doc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
    )  # fmt: skip
    (folder / "next.yaml").write_text(
        f"task: tiny_next\n{common}output_type: loglikelihood\n"
        'doc_to_target: "{{target}}"\n'
        "metric_list:\n  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
    )  # fmt: skip
    return folder


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No dataset may come from the Hub: set for datasets whether or not it was imported already."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def test_local_tasks_score_offline_as_the_brute_force_says(tmp_path: Path, tiny_model: GPT, offline: None) -> None:
    enc = tokenizer.byte_tokenizer()
    tasks = write_tasks(tmp_path / "tasks")

    results = harness.run_tasks(tiny_model, enc, ["tiny_choice", "tiny_next"], include_path=tasks, source="tiny")

    picks = [max(range(len(r["choices"])), key=lambda c: brute_force(tiny_model, enc, r["context"], r["choices"][c]))
             for r in ROWS]  # fmt: skip
    scores = {(s.task, s.metric): s for s in results.scores}
    assert scores["tiny_choice", "acc"].value == pytest.approx(sum(p == r["answer"] for p, r in zip(picks, ROWS)) / 4)
    assert scores["tiny_choice", "acc"].n == 4 and scores["tiny_choice", "acc"].stderr is not None
    assert ("tiny_next", "acc") in scores  # acc of a loglikelihood task: whether greedy decoding gives the target


def test_outside_a_git_repository_git_prints_nothing(
    tmp_path: Path, tiny_model: GPT, offline: None, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    # lm-eval runs `git describe` in the working directory: outside a repository git printed "fatal: not a git
    # repository" on the user's terminal.
    tasks = write_tasks(tmp_path / "tasks")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never the repository of a folder above

    results = harness.run_tasks(tiny_model, tokenizer.byte_tokenizer(), ["tiny_choice"], include_path=tasks, limit=2)

    assert results.scores and "not a git repository" not in capfd.readouterr().err


def cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run(main, argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def test_eval_tasks_prints_one_line_per_metric_and_saves_json_once(
    tmp_path: Path, tiny_checkpoint: Path, offline: None
) -> None:
    tasks, saved = write_tasks(tmp_path / "tasks"), tmp_path / "scores.json"
    argv = ["--ckpt", str(tiny_checkpoint), "--tasks", "tiny_choice,tiny_next", "--include_path", str(tasks)]

    code, out, _ = cli([*argv, "--limit", "3", "--output", str(saved)])

    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and all(re.fullmatch(r"tiny_\w+ +acc +[\d.]+ ± [\d.]+  n=3", line) for line in lines), out
    record = json.loads(saved.read_text())
    assert record["source"] == str(tiny_checkpoint) and {s["task"] for s in record["scores"]} == {"tiny_choice", "tiny_next"}
    assert record["lm_eval"]["n-samples"]["tiny_choice"]["effective"] == 3
    code, out, err = cli([*argv, "--output", str(saved)])  # never over a file already there
    assert (code, out) == (2, "") and "already exists" in err and json.loads(saved.read_text()) == record


def test_the_api_scores_what_the_command_prints(tmp_path: Path, tiny_checkpoint: Path, offline: None) -> None:
    tasks = write_tasks(tmp_path / "tasks")
    results = minigpt.load(tiny_checkpoint).tasks("tiny_choice,tiny_next", limit=3, include_path=tasks)
    code, out, _ = cli(["--ckpt", str(tiny_checkpoint), "--tasks", "tiny_choice,tiny_next", "--include_path", str(tasks),
                        "--limit", "3"])  # fmt: skip
    assert code == 0 and out == f"{results}\n"


@pytest.mark.parametrize("extra, message", [
    (["--tasks", "tiny_choice", "--data", "x.txt"], "--data scores a corpus and does not go with --tasks"),
    (["--tasks", "tiny_choice", "--stride", "4"], "--stride scores a corpus"),
    (["--data", "x.txt", "--limit", "3"], "--limit is for benchmark tasks: add --tasks"),
    (["--limit", "3"], "give --data .* or --tasks"),
    pytest.param(  # lm-eval's own index of thousands of tasks is searched too: 20 s to build
        ["--tasks", "tiny_choise", "--include_path", "{tasks}"], "unknown task 'tiny_choise'; did you mean tiny_choice",
        marks=pytest.mark.slow,
    ),
    (["--tasks", "tiny_choice", "--include_path", "{tasks}/choice.yaml"], "is not a folder"),
    (["--tasks", "tiny_choice,", "--include_path", "{tasks}"], "task names separated by commas"),
    (["--tasks", "tiny_choice", "--output", "{tasks}/no/such.json"], "the folder of .* does not exist"),
])  # fmt: skip
def test_option_mixes_and_unknown_tasks_are_one_line_errors(
    tmp_path: Path, tiny_checkpoint: Path, extra: list[str], message: str
) -> None:
    tasks = write_tasks(tmp_path / "tasks")
    code, out, err = cli(["--ckpt", str(tiny_checkpoint), *[a.format(tasks=tasks) for a in extra]])
    assert code == 2 and out == "" and err.count("\n") == 1 and re.search(message, err), err


def test_without_lm_eval_the_command_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else find_spec(name, *a))
    monkeypatch.delitem(sys.modules, "minigpt.harness")
    monkeypatch.delattr(sys.modules["minigpt"], "harness", raising=False)

    code, out, err = cli(["--ckpt", str(tiny_checkpoint), "--tasks", "hellaswag"])

    assert (code, out) == (2, "") and err.count("\n") == 1 and "pip install 'minigpt[eval]'" in err
