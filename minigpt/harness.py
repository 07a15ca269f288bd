"""Benchmark tasks (hellaswag, lambada_openai, a task of your own in YAML) through EleutherAI's
lm-evaluation-harness, scored by our own model and tokenizer rather than an exported copy.

`HarnessLM` is lm-eval's view of a `GPT` and its `tiktoken.Encoding`: it answers the harness's three requests
from our forward pass. A (context, continuation) pair is tokenized as lm-eval's Hugging Face backend does it
(`TemplateLM._encode_pair`: the pair encoded whole, the context's tokens split off), and context that does not fit
the window is cut from the left, so a pair longer than ``block_size + 1`` tokens keeps its last ``block_size``
inputs, as that backend does. `run_tasks` runs tasks by name and returns a `TaskResults`.

lm-eval is an optional extra (``pip install 'minigpt[eval]'``): importing this module without it is a
`MiniGPTError` that says so. Only this module imports lm_eval, and nothing imports this module but
``minigpt eval --tasks``, so its import cost (seconds) stays out of every other command.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import logging
import math
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken
import torch
import torch.nn.functional as F

from minigpt import tokenizer as tok
from minigpt.device import autocast
from minigpt.errors import MiniGPTError
from minigpt.model import GPT
from minigpt.sample import SamplingSettings, generate

if importlib.util.find_spec("lm_eval") is None:
    raise MiniGPTError("benchmark tasks need lm-evaluation-harness, which is not installed: pip install 'minigpt[eval]'")

from lm_eval.api.model import TemplateLM  # noqa: E402  (only once we know it is there)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's HF backend's default for generate_until

Pair = tuple[Any, list[int], list[int]]  # (request, context ids, continuation ids), as TemplateLM hands them on
KEPT = ("results", "n-samples", "n-shot", "versions", "higher_is_better", "configs")  # of lm-eval's record, in JSON


@dataclass(frozen=True)
class TaskScore:
    """One metric of one task: its value, lm-eval's standard error (None where it has none) and the number of
    documents scored (None for a group of tasks)."""

    task: str
    metric: str
    value: float
    stderr: float | None
    n: int | None

    def __str__(self) -> str:
        stderr = f" ± {self.stderr:.4f}" if self.stderr is not None else ""
        n = f"  n={self.n:,}" if self.n is not None else ""
        return f"{self.task}  {self.metric}  {self.value:.4f}{stderr}{n}"


@dataclass(frozen=True)
class TaskResults:
    """What `run_tasks` measured: one `TaskScore` per task and metric, and lm-eval's own record of the run."""

    source: str
    scores: tuple[TaskScore, ...]
    lm_eval: dict[str, Any]
    """lm-eval's results, n-samples, n-shot, versions, higher_is_better, configs and lm_eval_version."""

    @classmethod
    def from_lm_eval(cls, source: str, raw: dict[str, Any]) -> TaskResults:
        """The scores in `raw`, what lm-eval's `simple_evaluate` returns."""
        scores = []
        for task, metrics in raw["results"].items():
            n = raw.get("n-samples", {}).get(task, {}).get("effective")
            for key, value in metrics.items():
                metric, _, flt = key.partition(",")
                if not flt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                    continue  # name, alias, sample_len; a stderr goes with its metric
                stderr = metrics.get(f"{metric}_stderr,{flt}")
                scores.append(TaskScore(
                    task, metric if flt == "none" else f"{metric} ({flt})", float(value),
                    float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None, n,
                ))  # fmt: skip
        kept = {key: raw[key] for key in KEPT if key in raw}
        return cls(source, tuple(scores), {**kept, "lm_eval_version": raw.get("lm_eval_version")})

    def __str__(self) -> str:
        """One line per task and metric, columns aligned."""
        task_width = max((len(s.task) for s in self.scores), default=0)
        metric_width = max((len(s.metric) for s in self.scores), default=0)
        return "\n".join(
            str(TaskScore(s.task.ljust(task_width), s.metric.ljust(metric_width), s.value, s.stderr, s.n))
            for s in self.scores
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "scores": [vars(score) for score in self.scores],
            "lm_eval": self.lm_eval,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the results as JSON to `path`, which must not exist yet: all of it appears at once, or nothing."""
        from lm_eval.utils import handle_non_serializable  # a task's config may hold functions

        path = Path(path)
        if path.exists():
            raise MiniGPTError(f"{path} already exists: give --output a new file name, or remove it first")
        if not path.parent.is_dir():
            raise MiniGPTError(f"the folder of {path} does not exist: create it, or give another --output")
        text = json.dumps(self.to_dict(), indent=2, default=handle_non_serializable) + "\n"
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "x", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)  # unlike a rename, refuses to replace a file that appeared meanwhile
        except FileExistsError:
            raise MiniGPTError(f"{path} already exists: give --output a new file name, or remove it first") from None
        finally:
            tmp.unlink(missing_ok=True)
        return path


class HarnessLM(TemplateLM):
    """lm-eval's model interface over our `model` and `tokenizer`, `batch_size` sequences per forward pass."""

    def __init__(self, model: GPT, tokenizer: tiktoken.Encoding, batch_size: int = 8) -> None:
        super().__init__()
        if batch_size < 1:
            raise MiniGPTError(f"batch size {batch_size} is out of range: use at least 1")
        self.model, self.enc, self.batch_size = model.eval(), tokenizer, batch_size
        self.max_length = model.config.block_size
        self._device = next(model.parameters()).device

    @property
    def eot_token_id(self) -> int:
        return tok.eot_id(self.enc)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Our tokenizer's ids for `string`; special tokens are plain text here, as everywhere in minigpt."""
        return tok.encode(self.enc, string)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """The log-likelihood of each whole text after ``<|endoftext|>``, every token predicted once, in windows of
        up to ``block_size`` tokens (lm-eval's rolling windows, as its HF backend makes them)."""
        pairs: list[Pair] = []
        owners: list[int] = []
        for i, (text,) in enumerate(req.args for req in requests):
            windows = get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.eot_token_id, max_seq_len=self.max_length,
                context_len=1,
            )  # fmt: skip
            for context, continuation in map(make_disjoint_window, windows):
                pairs.append((None, context, continuation))
                owners.append(i)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(pairs), strict=True):
            totals[owner] += logprob
        return totals

    @torch.inference_mode()
    def _loglikelihood_tokens(self, requests: list[Pair], disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """(log-likelihood of the continuation, whether greedy decoding would produce it) for each request."""
        out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        rows = []  # (request index, input ids, continuation ids)
        for i, (_, context, continuation) in enumerate(requests):
            if not 1 <= len(continuation) <= self.max_length:
                raise MiniGPTError(
                    f"a task's continuation has {len(continuation)} tokens: the model scores 1 to its context window, "
                    f"{self.max_length}"
                )
            ids = (context + continuation)[-(self.max_length + 1) :]  # the context left-truncated to the window
            rows.append((i, ids[:-1], continuation))
        rows.sort(key=lambda row: -len(row[1]))  # similar lengths share a batch: little padding
        for first in range(0, len(rows), self.batch_size):
            batch = rows[first : first + self.batch_size]
            width = len(batch[0][1])
            inputs = torch.full((len(batch), width), self.eot_token_id, dtype=torch.long)
            for row, (_, ids, _) in enumerate(batch):
                inputs[row, : len(ids)] = torch.tensor(ids)  # right-padded: causal attention never sees the padding
            with autocast(self._device):
                logits = self.model(inputs.to(self._device))  # (B, T, vocab)
            logprobs = F.log_softmax(logits.float(), dim=-1)
            for row, (i, ids, continuation) in enumerate(batch):
                n = len(continuation)
                scored = logprobs[row, len(ids) - n : len(ids)]  # (n, vocab): the predictions of the continuation
                target = torch.tensor(continuation, device=scored.device)
                logprob = scored.gather(1, target[:, None]).sum().item()
                out[i] = (logprob, bool((scored.argmax(-1) == target).all()))
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy completions through our sampler, each ending before the first of its ``until`` strings, at
        ``<|endoftext|>`` or after ``max_gen_toks`` tokens; the context keeps its last ``block_size`` tokens."""
        answers = []
        for context, gen_kwargs in (req.args for req in requests):
            kwargs = dict(gen_kwargs)
            if kwargs.get("do_sample"):  # without it a temperature is ignored, as by transformers' generate
                raise MiniGPTError("minigpt eval --tasks decodes greedily only: the task asks for sampling (do_sample)")
            until = kwargs.get("until") or ()
            stop = (until,) if isinstance(until, str) else tuple(until)
            settings = SamplingSettings(
                max_new_tokens=int(kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS)), temperature=0.0, stop=stop
            )
            with autocast(self._device):
                answers.append(generate(self.model, self.enc, context, settings)[0])
        return answers


def run_tasks(
    model: GPT, tokenizer: tiktoken.Encoding, tasks: str | Sequence[str], *, limit: int | None = None,
    num_fewshot: int | None = None, include_path: str | os.PathLike[str] | None = None, batch_size: int = 8,
    source: str = "",
) -> TaskResults:  # fmt: skip
    """Score `model` on lm-eval `tasks` (names, or YAML files of tasks), each on its first `limit` documents (all:
    None), with `num_fewshot` examples in each prompt (None: each task's own); `include_path` is a folder of
    task YAMLs to add to lm-eval's, as ``lm_eval --include_path`` does. `source` names the model in the results."""
    names = _task_names(tasks)
    if limit is not None and limit < 1:
        raise MiniGPTError(f"limit {limit} is out of range: use at least 1 document per task")
    if num_fewshot is not None and num_fewshot < 0:
        raise MiniGPTError(f"num_fewshot {num_fewshot} is out of range: use 0 or more")
    from lm_eval import evaluator  # seconds to import: only once tasks are run

    manager = _task_manager(names, include_path)
    lm = HarnessLM(model, tokenizer, batch_size)
    try:
        with _no_git_lookup(evaluator):
            raw = evaluator.simple_evaluate(
                model=lm, tasks=names, num_fewshot=num_fewshot, limit=limit, task_manager=manager, log_samples=False,
                batch_size=batch_size,
            )  # fmt: skip
    except (ConnectionError, FileNotFoundError) as err:  # a task's dataset is missing or out of reach
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MiniGPTError(f"a task's dataset could not be loaded ({first}): check the network or its data files") from None
    assert raw is not None  # one process: rank 0
    return TaskResults.from_lm_eval(source, raw)


@contextmanager
def _no_git_lookup(evaluator: Any) -> Iterator[None]:
    """lm-eval records `git describe` run in the working directory as its results' ``git_hash``: the commit of
    whatever repository the user stands in, nothing of the model's, and outside any repository git prints
    "fatal: not a git repository" on the user's terminal. Within this block the hash is left out (None)."""
    lookup = evaluator.get_git_commit_hash
    evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = lookup


def _task_names(tasks: str | Sequence[str]) -> list[str]:
    if isinstance(tasks, str):
        tasks = tasks.split(",")
    names = [name.strip() for name in tasks]
    if not names or not all(names):
        raise MiniGPTError(f"give task names separated by commas (e.g. hellaswag,lambada_openai), got {','.join(tasks)!r}")
    return list(dict.fromkeys(names))


def _task_manager(names: list[str], include_path: str | os.PathLike[str] | None) -> Any:
    """lm-eval's task index: of `include_path` alone when every name asked for is a task there (lm-eval's own index
    of thousands of tasks takes many seconds to build), else of both; an unknown name is refused with the closest."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        folder = Path(include_path)
        if not folder.is_dir():
            raise MiniGPTError(f"--include_path {folder} is not a folder: give the folder that holds your task YAMLs")
        local = TaskManager(include_path=str(folder), include_defaults=False)
        if all(name in local.all_subtasks for name in names):  # a group may gather lm-eval's own tasks
            return local
    manager = TaskManager(include_path=str(include_path) if include_path is not None else None)
    for name in names:
        if not _known(manager, name):
            close = difflib.get_close_matches(name, manager.all_tasks, n=1)
            hint = f"; did you mean {close[0]}?" if close else ": `lm_eval ls tasks` lists them"
            raise MiniGPTError(f"unknown task {name!r}{hint}")
    return manager


def _known(manager: Any, name: str) -> bool:
    """Whether `manager` can load `name`: a task, group or tag it indexes, or a task YAML file."""
    return name in manager.all_tasks or (name.endswith((".yaml", ".yml")) and Path(name).is_file())
