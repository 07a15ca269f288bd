"""train.py under random arguments: every option gets values a user could type, valid, edge, huge or junk.

The contract checked for every command line (run in-process with `minigpt.cli.run`, as train.py runs it):
- the exit code is 0 or 2: never 1, never an uncaught exception (a traceback);
- exit 2 prints exactly one line on stderr, starting with "error: ";
- nothing is left that blocks a rerun: after exit 2 the --out_dir is gone, or holds no run and no config.yaml;
  after exit 0 it holds last.ckpt. The one exception is a run that diverged after saving: it keeps its last
  good checkpoints (which must load), as the divergence guard promises.

Most options keep a tiny valid value (so many examples really train, in well under a second); a few per
example are replaced by a "wild" value. Values that are valid but enormous (n_embd 10**6, batch_size 10**9,
samples 10**9) must be refused with a one-line error: each example runs under a memory ceiling and a time
limit, so an attempt to allocate them fails the test instead of taking the machine down.

Not drawn, because they are legitimately long or spawn processes rather than being mistakes: huge
--trainer.max_steps / --trainer.accumulate_grad_batches / --sample_tokens (slow by request), --trainer.devices /
--trainer.strategy values that start several processes, and a valid --num_workers above 1 (each is a process;
counts above the limit are drawn, and refused).
"""

from __future__ import annotations

import itertools
import random
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from minigpt import checkpoint
from minigpt.cli.train import main
from minigpt.training.run_folder import holds_run
from tests.helpers import run_captured

REPO = Path(__file__).resolve().parents[1]

# ---- values ------------------------------------------------------------------------------------------

HUGE_INTS = [10**6, 10**9, 10**12, 2**31, 2**32, 2**63, 10**30]
JUNK = ["", " ", "abc", "1.5", "1e3", "0x10", "1_0", "３", "nan", "inf", "-inf", "None", "null", "true", "[1]", "{}", "-"]


def floats_text(**kwargs) -> st.SearchStrategy[str]:
    return st.floats(**kwargs).map(repr)


def ints_text(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(str)


WILD_INT = st.one_of(
    ints_text(-3, 3),
    st.sampled_from([-1, -(10**12), *HUGE_INTS]).map(str),
    st.sampled_from(JUNK),
)
WILD_SMALL_INT = st.one_of(ints_text(-3, 3), st.sampled_from(["-1", "-1000000000000"]), st.sampled_from(JUNK))
WILD_FLOAT = st.one_of(
    floats_text(allow_nan=True, allow_infinity=True),
    floats_text(min_value=-2, max_value=2),
    st.sampled_from(["0", "-0.0", "1", "1.0", "1e308", "1e400", "5e-324", "1e-9", "nan", "inf", "-inf", "NaN", "Infinity"]),
    ints_text(-3, 3),
    st.sampled_from(JUNK),
)
WILD_BOOL = st.sampled_from(["true", "false", "True", "FALSE", "yes", "no", "1", "0", "maybe", "", "null"])


def odd(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo // 2, hi // 2).map(lambda n: 2 * n + 1).filter(lambda n: lo <= n <= hi)


BPE = st.one_of(odd(257, 1999), st.sampled_from([256, 257, 258, 512, 65535, 65537, 1 << 20, (1 << 20) + 1, 10**12]))
WILD_TOKENIZER = st.one_of(
    BPE.map(lambda n: f"bpe:{n}"),
    st.sampled_from(["bpe:", "bpe:0", "bpe:1", "bpe:-301", "bpe:abc", "bpe:1e3", "bpe: 301", "bpe:３０１", "BPE:301"]),
    st.sampled_from(["bytes", "Bytes", "bytes ", "", "byte", "nonsense", "gpt3", "bpe", "bytes:1"]),
    st.text(max_size=8).filter(lambda s: s not in {"bytes", "gpt2"} and not s.startswith("bpe:")),
)

# Tame: small valid values, so that an example with no wild option trains a tiny model in well under a second.
TAME = {
    "--model.block_size": ints_text(1, 24),
    "--model.n_layer": ints_text(1, 2),
    "--model.n_head": st.just("1"),  # n_head and n_embd are drawn together, in `tame_shape`
    "--model.n_embd": st.just("8"),
    "--model.dropout": st.one_of(st.sampled_from(["0", "0.0", "0.5", "0.99"]), floats_text(min_value=0, max_value=0.9)),
    "--model.bias": st.sampled_from(["true", "false", "True", "False"]),
    "--optim.lr": st.one_of(st.sampled_from(["1e-3", "0.01", "3e-4"]), floats_text(min_value=1e-6, max_value=0.1)),
    "--optim.min_lr_ratio": st.one_of(st.sampled_from(["0", "1", "0.1"]), floats_text(min_value=0, max_value=1)),
    "--optim.warmup_steps": ints_text(0, 10),
    "--optim.weight_decay": st.one_of(st.sampled_from(["0", "0.1"]), floats_text(min_value=0, max_value=1)),
    "--optim.beta1": st.one_of(st.sampled_from(["0", "0.9"]), floats_text(min_value=0, max_value=0.999)),
    "--optim.beta2": st.one_of(st.sampled_from(["0", "0.99"]), floats_text(min_value=0, max_value=0.999)),
    "--batch_size": ints_text(1, 6),
    "--val_fraction": st.one_of(st.sampled_from(["0.1", "0.5"]), floats_text(min_value=0.1, max_value=0.5)),
    "--val_windows": ints_text(1, 16),
    "--seed": st.one_of(st.sampled_from(["0", "1337", str(2**32 - 1)]), ints_text(0, 2**32 - 1)),
    "--num_workers": st.just("0"),
    "--samples": st.sampled_from(["0", "0", "0", "1", "2"]),
    "--sample_tokens": ints_text(1, 8),
    "--tokenizer": st.sampled_from(["bytes"] * 6 + ["bpe:257", "bpe:301"]),
    "--trainer.max_steps": ints_text(1, 3),
    "--trainer.val_check_interval": st.sampled_from(["1", "2", "3"]),
    "--trainer.accumulate_grad_batches": ints_text(1, 2),
    "--trainer.gradient_clip_val": st.one_of(st.sampled_from(["0", "1.0", "null"]), floats_text(min_value=0, max_value=5)),
    "--trainer.precision": st.sampled_from(["32-true", "32", "64-true", "bf16-mixed"]),
    "--trainer.accelerator": st.just("cpu"),
    "--trainer.devices": st.sampled_from(["1", "auto"]),
    "--trainer.limit_val_batches": st.sampled_from(["1", "1.0", "0.5", "2", "0"]),
    "--trainer.log_every_n_steps": ints_text(1, 50),
}

# Wild: edge values, wrong values, enormous values and junk, as typed on a command line.
WILD = {
    "--model.block_size": WILD_INT,
    "--model.n_layer": WILD_INT,
    "--model.n_head": st.one_of(WILD_INT, st.sampled_from(["2", "4", "8", "16"])),
    "--model.n_embd": st.one_of(WILD_INT, st.sampled_from(["4", "12", "16", str(10**6), str(2**20)])),
    "--model.dropout": st.one_of(WILD_FLOAT, st.sampled_from(["1", "0.999999", "-0.1"])),
    "--model.bias": WILD_BOOL,
    "--optim.lr": st.one_of(WILD_FLOAT, st.sampled_from(["1e30", "1e10", "1e-30", "0"])),
    "--optim.min_lr_ratio": WILD_FLOAT,
    "--optim.warmup_steps": WILD_INT,
    "--optim.weight_decay": st.one_of(WILD_FLOAT, st.sampled_from(["1e30"])),
    "--optim.beta1": st.one_of(WILD_FLOAT, st.sampled_from(["0.999999", "1"])),
    "--optim.beta2": st.one_of(WILD_FLOAT, st.sampled_from(["0.999999", "1"])),
    # Not 10**6: with a context of a few tokens that batch needs GBs, which fits this machine's RAM (so the product
    # rightly tries) but not the test's memory ceiling.
    "--batch_size": st.one_of(WILD_SMALL_INT, st.sampled_from([str(n) for n in HUGE_INTS if n > 10**6])),
    "--val_fraction": st.one_of(WILD_FLOAT, st.sampled_from(["0.5", "0.50000001", "1e-9", "0.001"])),
    "--val_windows": WILD_INT,
    "--seed": st.one_of(WILD_INT, st.sampled_from([str(2**32), "-1"])),
    "--num_workers": st.sampled_from(["0", "1", "-1", "-1000000000000", "abc", "1.5", "", "nan", "100000", str(2**63)]),
    "--samples": WILD_INT,
    "--sample_tokens": WILD_SMALL_INT,
    "--tokenizer": WILD_TOKENIZER,
    "--trainer.max_steps": st.one_of(ints_text(-3, 3), st.sampled_from(["-1", "-1000000000000", "1.5", "nan", "inf", "abc", "", "null"])),
    "--trainer.val_check_interval": st.one_of(
        ints_text(-3, 1000), floats_text(min_value=-1, max_value=2), WILD_FLOAT, st.sampled_from(["0.5", "1.5", "0.0", str(10**12)])
    ),
    "--trainer.accumulate_grad_batches": WILD_SMALL_INT,
    "--trainer.gradient_clip_val": st.one_of(WILD_FLOAT, st.sampled_from(["null", "-1", "1e30"])),
    "--trainer.precision": st.sampled_from(
        ["16-mixed", "16", "16-true", "bf16", "bf16-true", "64", "transformer-engine", "transformer-engine-float16",
         "bogus", "", "32 ", "null", "32-TRUE", "8", "mixed"]
    ),  # fmt: skip
    "--trainer.accelerator": st.sampled_from(["gpu", "cuda", "mps", "tpu", "hpu", "bogus", "", "CPU", "auto", "null"]),
    "--trainer.devices": st.sampled_from(["0", "-2", "bogus", "", "1.5", "null", "[]", "0,", "1"]),
    "--trainer.limit_val_batches": st.one_of(WILD_FLOAT, WILD_INT),
    "--trainer.log_every_n_steps": WILD_INT,
}
assert TAME.keys() == WILD.keys()
OPTIONS = list(TAME)


@st.composite
def tame_shape(draw: st.DrawFn) -> dict[str, str]:
    """n_head and n_embd that fit together."""
    n_head = draw(st.integers(1, 4))
    return {"--model.n_head": str(n_head), "--model.n_embd": str(n_head * draw(st.integers(1, 6)))}


@st.composite
def option_values(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Every option once, in a fixed order: tame values, with a few (often none) replaced by wild ones."""
    wild = draw(st.sets(st.sampled_from(OPTIONS), max_size=3))
    values = {name: draw(TAME[name]) for name in OPTIONS}
    values.update(draw(tame_shape()))
    values.update({name: draw(WILD[name]) for name in OPTIONS if name in wild})
    return list(values.items())


def command_line(values: list[tuple[str, str]], joined: list[bool]) -> list[str]:
    """The words a user types: `--name value`, or `--name=value` (the only way to pass a value such as -inf)."""
    words: list[str] = []
    for (name, value), join in zip(values, joined):
        words += [f"{name}={value}"] if join else [name, value]
    return words


COMMAND_LINES = st.builds(
    command_line, option_values(), st.lists(st.booleans(), min_size=len(OPTIONS), max_size=len(OPTIONS))
)

# A tiny valid run (about half a second); the known bugs below are this plus one or two options.
BASELINE = [
    "--model.block_size=8", "--model.n_layer=1", "--model.n_head=2", "--model.n_embd=8", "--model.dropout=0",
    "--model.bias=true", "--optim.lr=1e-3", "--optim.min_lr_ratio=0.1", "--optim.warmup_steps=0",
    "--optim.weight_decay=0.1", "--optim.beta1=0.9", "--optim.beta2=0.99", "--batch_size=2", "--val_fraction=0.1",
    "--val_windows=4", "--seed=1", "--num_workers=0", "--samples=0", "--sample_tokens=4", "--tokenizer=bytes",
    "--trainer.max_steps=2", "--trainer.val_check_interval=1", "--trainer.accumulate_grad_batches=1",
    "--trainer.gradient_clip_val=1.0", "--trainer.precision=32-true", "--trainer.accelerator=cpu",
    "--trainer.devices=1", "--trainer.limit_val_batches=1.0", "--trainer.log_every_n_steps=1",
]  # fmt: skip

# Command lines this test once found failing (each is BASELINE plus a change; later options override earlier
# ones), kept as explicit examples so that they stay fixed.
FOUND = [
    ["--trainer.val_check_interval=0.5"],  # was a MisconfigurationException from Lightning's fit loop
    ["--trainer.val_check_interval=00:00:00:30"],  # was a TypeError in _validate: a str compared with 0
    ["--trainer.val_check_interval=abc"],  # same TypeError
    ["--trainer.limit_val_batches=1e-9"],  # was a MisconfigurationException from Lightning's sanity check
    ["--trainer.precision=transformer-engine"],  # was a ModuleNotFoundError from Trainer()
    ["--trainer.accelerator=tpu"],  # was a ModuleNotFoundError from Trainer() (torch_xla)
    ["--val_fraction=5e-324"],  # was an OverflowError in prepare._split: round(1 / val_fraction)
    ["--model.n_embd=1000000"],  # the model was allocated: 12 TB (RuntimeError: can't allocate memory)
    ["--model.n_embd=9223372036854775808"],  # was a TypeError: overflow in torch.empty
    ["--batch_size=1000000000"],  # an 8 GB batch was allocated (RuntimeError: can't allocate memory)
    ["--batch_size=9223372036854775808"],  # was a ValueError from islice in the validation DataLoader
    ["--samples=1000000000"],  # was a MemoryError in sample.generate, after training finished and saved
    ["--samples=9223372036854775808"],  # was an OverflowError in sample.generate, after training
    ["--optim.lr=1e30"],  # was a RuntimeError (multinomial: inf/nan probabilities) in SampleLogger
    ["--optim.weight_decay=1e30"],  # the same, and the divergence message blamed the learning rate
    ["--num_workers=9223372036854775808"],  # forked DataLoader workers until the machine ran out of memory
    ["--tokenizer=bpe:３０１"],  # full-width digits were accepted as another spelling of bpe:301
    # Diverges after a checkpoint was saved: exit 2, and the last good checkpoints are kept (by design).
    ["--optim.lr=3e3", "--trainer.max_steps=20", "--trainer.val_check_interval=2"],
]
# Found failing too, and slow when they fail (a model or batch too big to build or run in reasonable time).
FOUND_SLOW = [
    ["--model.n_layer=1000000"],  # built a million blocks
    ["--samples=1000000"],  # a million samples generated after training
]


def known(examples: list[list[str]]):
    """Decorate a @given test with each known failure as an explicit example."""

    def decorate(test):
        for change in reversed(examples):
            test = example(words=[*BASELINE, *change])(test)
        return test

    return decorate


# ---- running one command -----------------------------------------------------------------------------

WORDS = (
    "the a of to and in that is was he for it with as his on be at by had are but from not have this they "
    "which one you were her all she there would their we him been has when who will more no if out so said what "
    "up its about into than them can only other new some could time these two may then do first any my now such "
    "like our over man me even most made after also did many before must through back years where much your way "
    "ROMEO JULIET wherefore art thou: here, 12, 345; café naïve 東京 — ok!"
).split()


def write_corpus(path: Path) -> Path:
    """About 24 KB of varied text: enough windows for any tame block size and BPE vocabularies of a few hundred."""
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))).capitalize() + "." for _ in range(600)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train(argv: list[str]) -> tuple[int, str, str]:
    """train.py in-process, as its entry point runs it, under a memory ceiling and a minute's limit (tiny runs
    take well under a second, BPE training a few seconds); (exit code, stdout, stderr)."""
    return run_captured(main, argv, time_limit_s=60)


class Workspace:
    """One corpus and one shard cache for all examples of a test, and a fresh out_dir for each example."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.corpus = write_corpus(root / "corpus.txt")
        self.cache = root / "cache"
        self._count = itertools.count()

    def new_out_dir(self) -> Path:
        return self.root / f"example-{next(self._count)}" / "run"


@pytest.fixture(scope="module")
def workspace() -> Iterator[Workspace]:
    with tempfile.TemporaryDirectory(prefix="minigpt-fuzz-") as root:
        yield Workspace(Path(root))


def check_contract(workspace: Workspace, words: list[str]) -> None:
    """Run train.py with `words` (plus corpus, cache and a fresh out_dir) and assert the contract of the module docstring."""
    out_dir = workspace.new_out_dir()
    fixed = ["--data", str(workspace.corpus), "--cache_dir", str(workspace.cache), "--out_dir", str(out_dir),
             "--trainer.enable_progress_bar", "false"]  # fmt: skip
    argv = [*fixed, *words]
    note("python train.py " + shlex.join(argv))
    code, _, err = train(argv)
    note(f"exit {code}; stderr: {err!r}")
    assert code in (0, 2), f"exit code {code}: {err}"
    if code == 2:
        assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, f"not one error line: {err!r}"
        if "training diverged" in err and holds_run(out_dir):
            # The one failure that keeps a run, on purpose: its last good (finite) checkpoints.
            for path in out_dir.glob("*.ckpt"):
                checkpoint.load(path)
        elif out_dir.exists():
            left = sorted(p.name for p in out_dir.iterdir())
            assert not holds_run(out_dir), f"a failed run left a run in the out_dir, so a rerun is refused: {left}"
            assert not (out_dir / "config.yaml").exists(), f"a failed run left config.yaml in the out_dir: {left}"
    else:
        assert (out_dir / "last.ckpt").is_file(), f"a finished run left no last.ckpt in {out_dir}"


FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=40, **FUZZ)
@known(FOUND)
@given(words=COMMAND_LINES)
def test_any_command_line_exits_0_or_2_with_one_line_and_leaves_no_blocking_folder(workspace: Workspace, words) -> None:
    check_contract(workspace, words)


@pytest.mark.slow
@settings(max_examples=200, **FUZZ)
@known(FOUND + FOUND_SLOW)
@given(words=COMMAND_LINES)
def test_many_command_lines_exit_0_or_2_with_one_line_and_leave_no_blocking_folder(workspace: Workspace, words) -> None:
    check_contract(workspace, words)


def test_a_late_mistake_prints_one_line_on_the_real_command(workspace: Workspace) -> None:
    """The real command's stderr, for a mistake found only once the corpus is tokenized (a context longer than
    the corpus): the error is one line, the last, as the README promises."""
    out_dir = workspace.new_out_dir()
    argv = [sys.executable, str(REPO / "train.py"), "--data", str(workspace.corpus), "--cache_dir", str(workspace.cache),
            "--out_dir", str(out_dir), "--trainer.enable_progress_bar=false", *BASELINE, "--model.block_size=100000"]  # fmt: skip
    done = subprocess.run(argv, cwd=workspace.root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    # Progress lines (tokenizing ...) may come first; the error itself is one line, the last, and no traceback.
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert sum(line.startswith("error") for line in lines) == 1, done.stderr
    assert "fewer than one window" in done.stderr and not out_dir.exists()
