"""generate, attention, eval and export under random arguments, and model sources crafted to lie.

The contract for every case (run in-process with `minigpt.cli.run`, as the `minigpt` command runs it, under a
memory ceiling and a time limit): the exit code is 0 or 2, never a traceback or a hang; exit 2 prints exactly
one line on stderr starting with "error: "; a failed attention or export leaves nothing at its --out.
The crafted sources are Hugging Face folders (config.json, tokenizer.json, the index and the safetensors file
damaged or lying) and checkpoints whose payload lies under a valid checksum. Cases are drawn from a seeded
generator, so a failure names a case that replays. `train` has its own fuzz (test_train_fuzz.py).
"""

from __future__ import annotations

import copy
import json
import random
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from minigpt import checkpoint, tokenizer
from minigpt.cli.main import main
from minigpt.hf.export import export
from minigpt.model import GPT
from minigpt.payload import MODEL_PREFIX, Payload
from tests.helpers import Hang, run_captured, tiny_config

TIME_LIMIT_S = 60  # one case: a tiny model answers in well under a second
WILD_INTS = ["-1", "0", "1", "2", "3", "-1000000000000", "1000000", "1000000000", str(2**63), "1e3", "1.5", "abc", "", "nan", "３"]
WILD_FLOATS = ["0", "-0.0", "1", "0.5", "2", "1e-9", "1e308", "1e400", "-1", "nan", "inf", "-inf", "abc", "", "1_0"]
TEXTS = ["hi", "", " ", "\n", "the quick brown fox", "café 東京 — ok!", "<|endoftext|>", "\x00\x01", "a" * 5000, "\ud800"]
JUNK = ["", "-", "--", "null", "[]", "{}", "../..", "/", "/dev/null", "/proc/self/mem", "x" * 300]


@dataclass
class Workspace:
    root: Path
    ckpt: Path
    hf: Path
    text: Path
    binary: Path

    def paths(self) -> list[str]:
        """Sources and files a user might pass where a path is asked for, real and not."""
        return [str(self.ckpt), str(self.hf), str(self.text), str(self.binary), str(self.root / "missing"),
                str(self.root), *JUNK]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    model = GPT(tiny_config(block_size=16))
    ckpt = root / "tiny.ckpt"
    state = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    checkpoint.atomic_save({"state_dict": state, checkpoint.PAYLOAD_KEY: Payload(model.config, tokenizer.byte_tokenizer()).to_dict()}, ckpt)
    export(str(ckpt), root / "hf")
    text = root / "text.txt"
    text.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(200)))
    binary = root / "binary.bin"
    binary.write_bytes(random.Random(0).randbytes(4096))
    return Workspace(root, ckpt, root / "hf", text, binary)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


# ---- random command lines ----------------------------------------------------------------------------


def choices(*values: str) -> Callable[[random.Random, Workspace], str]:
    return lambda rng, ws: rng.choice(values)


def path_or(*values: str) -> Callable[[random.Random, Workspace], str]:
    return lambda rng, ws: rng.choice([*ws.paths(), *values])


def either(tame: Callable[[random.Random, Workspace], str], wild: Callable[[random.Random, Workspace], str]):
    """Mostly a value that works, so that cases reach past parsing; sometimes a wild one."""
    return lambda rng, ws: (tame if rng.random() < 0.6 else wild)(rng, ws)


INT, FLOAT, TEXT = choices(*WILD_INTS), choices(*WILD_FLOATS), choices(*TEXTS)
SMALL, UNIT = either(choices("1", "2", "3"), INT), either(choices("0.5", "0.9", "1"), FLOAT)
LIST = either(choices("0", "1", "0,1", "1,0"), choices("5", "-1", "0,0", "a", "", ",", "0,", "1000000000000"))
DEVICE = either(choices("auto", "cpu"), choices("cuda", "mps", "tpu", "", "CPU"))
FLAG = choices("")  # a flag: present, with no value
ATTENTION = {"--layers": LIST, "--heads": LIST, "--aggregate": choices("mean", "rollout", "max", ""),
             "--per_head": FLAG, "--top_heads": SMALL, "--ablate": FLAG, "--ablate_windows": SMALL,
             "--data": either(lambda rng, ws: str(ws.text), path_or("bytes"))}  # fmt: skip
OPTIONS: dict[str, dict[str, Callable[[random.Random, Workspace], str]]] = {
    "generate": {"--prompt": TEXT, "--prompt_file": either(lambda rng, ws: str(ws.text), path_or()),
                 "--max_new_tokens": choices("-1", "0", "1", "5", "abc", "", "1e3"), "--temperature": UNIT, "--top_k": SMALL,
                 "--top_p": UNIT, "--repetition_penalty": either(choices("1", "1.3"), FLOAT), "--stop": TEXT,
                 "--num_samples": SMALL, "--seed": either(choices("0", "7"), INT), "--device": DEVICE,
                 "--attention_completion": FLAG, "--attention": lambda rng, ws: "OUT", **ATTENTION},  # fmt: skip
    "attention": {"--prompt": TEXT, "--device": DEVICE, "--out": lambda rng, ws: "OUT", **ATTENTION,
                  "--logit_lens": either(choices("3", "1"), INT), "--corrupt": either(choices("hello thera", "jello there"), TEXT),
                  "--answer": either(choices("e", " "), TEXT), "--wrong": either(choices("a", "x"), TEXT)},  # fmt: skip
    "eval": {"--data": either(lambda rng, ws: str(ws.text), path_or("bytes", "pydoc")),
             "--split": choices("all", "train", "val", "test", ""), "--val_fraction": UNIT, "--batch_size": SMALL,
             "--stride": SMALL, "--device": DEVICE, "--cache_dir": lambda rng, ws: str(ws.root / "cache")},  # fmt: skip
    "export": {"--out": lambda rng, ws: "OUT"},
}
TAME = {"generate": ["--prompt", "hi", "--max_new_tokens", "3"], "attention": ["--prompt", "hello there", "--out", "OUT"],
        "eval": ["--data", "TEXT"], "export": ["--out", "OUT"]}  # fmt: skip


def command_line(command: str, rng: random.Random, ws: Workspace, out: Path) -> list[str]:
    """A real source (mostly), the command's tame options, then up to four options with drawn values."""
    source = str(ws.ckpt) if rng.random() < 0.6 else str(ws.hf) if rng.random() < 0.7 else rng.choice(ws.paths())
    words = ["--ckpt", source, *TAME[command]] if rng.random() < 0.95 else TAME[command]
    for name in rng.sample(sorted(OPTIONS[command]), k=rng.randint(0, min(4, len(OPTIONS[command])))):
        value = OPTIONS[command][name](rng, ws)
        words += [name] if OPTIONS[command][name] is FLAG else [f"{name}={value}"] if value.startswith("-") else [name, value]
    return [command, *(str(out) if w == "OUT" else str(ws.text) if w == "TEXT" else w for w in words)]


# ---- crafted sources ---------------------------------------------------------------------------------

WILD_VALUES = [None, [], {}, "x", True, -1, 0, 1.5, 10**30, 2**63, "nan", [1], {"a": 1}, 100000]


def crafted_folders(ws: Workspace, rng: random.Random, n: int) -> Iterator[tuple[str, Callable[[Path], None]]]:
    """(description, a change to a copy of the exported folder)."""
    config = json.loads((ws.hf / "config.json").read_text())
    tok = json.loads((ws.hf / "tokenizer.json").read_text())
    deep = "[" * 200_000 + "]" * 200_000
    patterns = ["", "a", "((a+)+)+(?=b)|\\S|\\s", "(", "\\", "[^\\s\\S]", ".", "(?<=a)b"]
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        for content in (b"", b"{", b"[]", deep.encode(), b"\xff\xfe\x00", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"):
            yield f"{name} = {content[:12]!r}", lambda f, name=name, content=content: (f / name).write_bytes(content)
        yield f"no {name}", lambda f, name=name: (f / name).unlink()
    for pattern in patterns:
        yield f"pattern {pattern!r}", lambda f, p=pattern: _set(f / "tokenizer.json", tok, ["pre_tokenizer", "pretokenizers", 0, "pattern", "Regex"], p)
    for _ in range(n):
        if rng.random() < 0.5:
            key, value = rng.choice(sorted(config)), rng.choice(WILD_VALUES)
            yield f"config.json {key}={value!r}"[:120], lambda f, k=key, v=value: _set(f / "config.json", config, [k], v)
        else:
            path = _random_path(tok, rng)
            value = rng.choice(WILD_VALUES)
            yield f"tokenizer.json {path}={value!r}"[:120], lambda f, p=path, v=value: _set(f / "tokenizer.json", tok, p, v)


def _random_path(data: object, rng: random.Random) -> list[object]:
    """A path to some node of a JSON tree, descending a few levels at random."""
    path: list[object] = []
    while rng.random() < 0.75 and isinstance(data, (dict, list)) and data:
        key = rng.choice(sorted(data)) if isinstance(data, dict) else rng.randrange(len(data))
        path.append(key)
        data = data[key]
    return path


def _set(file: Path, original: dict, path: list[object], value: object) -> None:
    data = copy.deepcopy(original)
    node = data
    try:
        for key in path[:-1]:
            node = node[key]
        if path:
            node[path[-1]] = value
        else:
            data = value
    except (KeyError, IndexError, TypeError):
        return
    file.write_text(json.dumps(data))


def crafted_payloads(ws: Workspace, rng: random.Random, n: int) -> Iterator[tuple[str, dict]]:
    """(description, a payload dict) lying about the model, the tokenizer or the data."""
    base = checkpoint.read(ws.ckpt)[0][checkpoint.PAYLOAD_KEY]
    for key in ("n_layer", "n_embd", "block_size", "vocab_size", "n_head"):
        for value in (10**5, 10**30, 2**63, 0, -1):
            yield f"model_config.{key}={value}", _with(base, ["model_config", key], value)
    for _ in range(n):
        path = _random_path({k: v for k, v in base.items() if k != "tokenizer"} | {"tokenizer": {k: v for k, v in base["tokenizer"].items() if k != "ranks"}}, rng)
        value = rng.choice(WILD_VALUES)
        yield f"payload {path}={value!r}"[:120], _with(base, path, value)


def _with(base: dict, path: list[object], value: object) -> dict:
    data = copy.deepcopy(base)
    node = data
    for key in path[:-1]:
        node = node[key]
    if path:
        node[path[-1]] = value
    return data


# ---- the contract ------------------------------------------------------------------------------------


def contract_broken(argv: list[str], out: Path | None = None) -> str | None:
    """Why this case breaks the contract, or None."""
    try:
        code, _, err = run_captured(main, argv, time_limit_s=TIME_LIMIT_S)
    except Hang:
        return "hang: minigpt " + shlex.join(argv)
    except BaseException as exc:  # a traceback
        return f"{type(exc).__name__}: {exc} -- minigpt {shlex.join(argv)}"[:400]
    if code not in (0, 2):
        return f"exit {code}: {err[-300:]} -- minigpt {shlex.join(argv)}"
    if code == 2 and not (err.startswith("error: ") and err.count("\n") == 1 and err.endswith("\n")):
        return f"not one error line: {err[-300:]!r} -- minigpt {shlex.join(argv)}"
    if code == 2 and out is not None and out.exists() and any(out.iterdir()):
        return f"a failed command left files at {out} -- minigpt {shlex.join(argv)}"
    return None


def fuzz_commands(ws: Workspace, seed: int, per_command: int) -> list[str]:
    rng = random.Random(seed)
    broken = []
    for command in OPTIONS:
        for i in range(per_command):
            out = ws.root / f"out-{seed}-{command}-{i}"
            broken.append(contract_broken(command_line(command, rng, ws, out), out))
    return [b for b in broken if b]


def fuzz_sources(ws: Workspace, seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    broken = []
    for i, (what, change) in enumerate(crafted_folders(ws, rng, n)):
        folder = ws.root / f"hf-{seed}-{i}"
        folder.mkdir()
        for file in ws.hf.iterdir():
            (folder / file.name).write_bytes(file.read_bytes())
        change(folder)
        broken.append(contract_broken(["generate", "--ckpt", str(folder), "--prompt", "hi there", "--max_new_tokens", "2"]))
        broken[-1] = broken[-1] and f"{what}: {broken[-1]}"
    state = checkpoint.read(ws.ckpt)[0]["state_dict"]
    for i, (what, payload) in enumerate(crafted_payloads(ws, rng, n)):
        path = ws.root / f"crafted-{seed}-{i}.ckpt"
        checkpoint.atomic_save({"state_dict": state, checkpoint.PAYLOAD_KEY: payload}, path)
        broken.append(contract_broken(["generate", "--ckpt", str(path), "--prompt", "hi there", "--max_new_tokens", "2"]))
        broken[-1] = broken[-1] and f"{what}: {broken[-1]}"
    return [b for b in broken if b]


def assert_none(broken: list[str]) -> None:
    assert not broken, f"{len(broken)} cases broke the contract:\n" + "\n".join(broken)


def test_random_command_lines_exit_0_or_2_with_one_line(workspace: Workspace) -> None:
    assert_none(fuzz_commands(workspace, seed=0, per_command=15))


def test_crafted_sources_are_refused_in_one_line(workspace: Workspace) -> None:
    assert_none(fuzz_sources(workspace, seed=0, n=25))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_many_command_lines_exit_0_or_2_with_one_line(workspace: Workspace, seed: int) -> None:
    assert_none(fuzz_commands(workspace, seed=seed, per_command=100))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_many_crafted_sources_are_refused_in_one_line(workspace: Workspace, seed: int) -> None:
    assert_none(fuzz_sources(workspace, seed=seed, n=150))
