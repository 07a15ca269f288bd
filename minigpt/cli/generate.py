"""`minigpt generate` (or `generate.py`): sample completions from a checkpoint, for one prompt or, with
--interactive, for each prompt read from standard input.

Imports only torch, tiktoken and the inference side of the package (never Lightning or datasets),
so the first token comes quickly.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from tqdm import tqdm

from minigpt.api import load
from minigpt.cli import run
from minigpt.cli.attention import (
    add_attention_arguments,
    check_ablation_options,
    check_out_dir,
    load_for_report,
    report_attention,
)
from minigpt.cli.common import (
    CKPT_HELP,
    OneLineParser,
    add_device_argument,
    as_utf8,
    canonical_options,
    resolve_device,
    utf8_text,
)
from minigpt.cli.stdout import check_stdout_open, writing_stdout
from minigpt.device import autocast
from minigpt.errors import MiniGPTError
from minigpt.sample import SamplingSettings, stream

MAX_PROMPT_CHARS = 1 << 24
"""The longest prompt read (16 Mi characters): the model sees only its last block_size tokens, and /dev/zero or
/dev/urandom as a prompt file would otherwise be read until memory runs out."""
DIVIDER = "-" * 20
PROMPT_MARKER = "> "  # shown on a terminal before each prompt
CONTINUATION_MARKER = "... "  # and before each further line of a prompt whose line ended in a backslash


def build_parser() -> argparse.ArgumentParser:
    """The generate command's options; other features add theirs to the returned parser. The sampling options
    are named like `SamplingSettings`' fields and default to its defaults."""
    p = OneLineParser(
        prog="minigpt generate",
        description="Sample text from a minigpt checkpoint: prints the prompt and its completion "
        "(one sample streams as it is produced).",
    )
    p.add_argument("--ckpt", required=True, help=CKPT_HELP)
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--prompt", type=utf8_text,
        help="prompt text ('-' reads standard input); without --prompt or --prompt_file, a piped "
        "standard input is the prompt; an empty prompt starts from <|endoftext|>",
    )  # fmt: skip
    source.add_argument("--prompt_file", help="read the prompt from this UTF-8 text file")
    p.add_argument(
        "--max_new_tokens", type=int, default=SamplingSettings.max_new_tokens,
        help="most tokens to generate per sample (>= 1; default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--temperature", type=float, default=SamplingSettings.temperature,
        help="softmax temperature (>= 0; default %(default)s); 0 = greedy",
    )  # fmt: skip
    p.add_argument("--top_k", type=int, help="sample only from the k most likely tokens (>= 1; default: all)")
    p.add_argument("--top_p", type=float, help="nucleus sampling: the smallest set with this much mass, in (0, 1]")
    p.add_argument(
        "--repetition_penalty", type=float, default=SamplingSettings.repetition_penalty,
        help="make tokens already in the prompt or completion less likely (>= 1; default %(default)s = off)",
    )  # fmt: skip
    p.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", type=utf8_text,
        help="stop a sample when its text contains TEXT (not printed); repeatable. <|endoftext|> always stops",
    )  # fmt: skip
    p.add_argument(
        "--num_samples", type=int, default=SamplingSettings.num_samples,
        help="samples drawn together in one batch (>= 1; default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--seed", type=int,
        help="the same seed gives the same samples (default: a random seed); with --interactive every prompt is "
        "sampled with this seed, so each answer equals a run of that prompt alone",
    )  # fmt: skip
    p.add_argument(
        "--interactive", action="store_true",
        help="load the checkpoint once, then complete each line read from standard input until it ends "
        "(a line ending in a backslash continues on the next; empty lines are skipped)",
    )  # fmt: skip
    add_device_argument(p)
    add_attention_arguments(p)
    p.add_argument(
        "--attention_completion", action="store_true",
        help="with --attention: draw the maps of the prompt plus the (first) completion, not the prompt alone",
    )  # fmt: skip
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The options of `argv`, spelled with underscores (`--max_new_tokens`) or dashes (`--max-new-tokens`)."""
    return build_parser().parse_args(canonical_options(argv))


def main(argv: Sequence[str]) -> None:
    """Parse `argv`, load the checkpoint, and print the completions (of each prompt, with --interactive)."""
    args = parse_args(argv)
    # Every check before the slow part: loading the checkpoint.
    settings = sampling_settings(args)
    check_stdout_open()
    if args.interactive:
        check_interactive(args)
        prompt = None
    else:
        prompt = read_prompt(args.prompt, args.prompt_file)
    if args.attention_dir:
        check_ablation_options(args)
        check_out_dir(args.attention_dir)
    else:
        check_attention_options_unused(args)
    device = resolve_device(args.device)
    loaded, ablate_on = load_for_report(args, device) if args.attention_dir else (load(args.ckpt, device), None)
    sample = functools.partial(stream, loaded.model, loaded.tokenizer, settings=settings)
    if prompt is None:  # --interactive: the prompts come now that the model is loaded
        with writing_stdout(), autocast(device):
            answer_each_prompt(sys.stdin, sample)
        return
    completions = [""]
    with writing_stdout(), autocast(device):
        completions = print_completions(
            prompt, sample(prompt), settings.num_samples, keep=bool(args.attention_dir) and args.attention_completion,
            most_tokens=settings.max_new_tokens,
        )
    if args.attention_dir:
        analysed = prompt + completions[0] if args.attention_completion else prompt
        name = "the prompt and its completion" if args.attention_completion else "the prompt"
        with writing_stdout():
            report_attention(args, loaded, analysed, ablate_on, text_name=name)


ATTENTION_OPTIONS = ("ablate", "data", "ablate_windows", "layers", "heads", "aggregate", "per_head", "attention_completion")


def check_attention_options_unused(args: argparse.Namespace) -> None:
    """Options of the attention report mean nothing without --attention: refuse them rather than ignore them."""
    given = [name for name in ATTENTION_OPTIONS if getattr(args, name) not in (None, False)]
    if given:
        raise MiniGPTError(f"--{given[0]} belongs to the attention report: add --attention OUT_DIR, or drop it")


def sampling_settings(args: argparse.Namespace) -> SamplingSettings:
    """The sampling options of `args`, which bear the names of `SamplingSettings`' fields, as one checked
    object (`MiniGPTError` names the first out-of-range one)."""
    return SamplingSettings(**{field.name: getattr(args, field.name) for field in dataclasses.fields(SamplingSettings)})


def check_interactive(args: argparse.Namespace) -> None:
    """Raise `MiniGPTError` when --interactive comes with an option it cannot honour."""
    if args.prompt is not None or args.prompt_file is not None:
        option = "--prompt" if args.prompt is not None else "--prompt_file"  # never both: argparse refuses that
        raise MiniGPTError(f"--interactive reads its prompts from standard input: drop {option}")
    if args.num_samples > 1:
        raise MiniGPTError("--interactive streams one sample per prompt: drop --num_samples, or run without --interactive")
    if args.attention_dir:
        raise MiniGPTError("--interactive draws no attention maps: run --attention with a single --prompt instead")
    if sys.stdin is None:  # `<&-`
        raise MiniGPTError("--interactive reads prompts from standard input, but it is closed")


def answer_each_prompt(stdin: TextIO, sample: Callable[[str], Iterator[tuple[int, str]]]) -> None:
    """--interactive: print each prompt of `stdin` with its completion from `sample`, as a run of that prompt
    alone prints it, until `stdin` ends. Prompts from a pipe or file, which nobody sees typed, get a divider line
    before each answer, so that one answer's end and the next prompt's start are told apart."""
    divided = not stdin.isatty()
    for n, prompt in enumerate(read_prompts(stdin), 1):
        if divided:
            print(f"{DIVIDER} prompt {n} {DIVIDER}", flush=True)
        print_completions(prompt, sample(prompt), 1, keep=False)


def read_prompts(stdin: TextIO) -> Iterator[str]:
    """Each prompt of `stdin` until it ends: a line, or several joined when a line ends in a backslash (which
    stands for the line break). Empty prompts are skipped; a terminal is shown a marker on stderr, so that
    stdout holds only the completions."""
    terminal = stdin.isatty()
    prompt = ""
    while True:
        if terminal:
            print(CONTINUATION_MARKER if prompt else PROMPT_MARKER, end="", file=sys.stderr, flush=True)
        try:
            line = stdin.readline(MAX_PROMPT_CHARS + 1)
        except (OSError, UnicodeDecodeError) as err:
            raise MiniGPTError(f"cannot read a prompt from standard input: {err}") from None
        try:
            line = as_utf8(line)
        except ValueError as err:
            raise MiniGPTError(f"a prompt from standard input is {err}") from None
        if len(prompt) + len(line) > MAX_PROMPT_CHARS:
            raise MiniGPTError(too_long("a prompt from standard input"))
        if not line:  # the end of the input, or Ctrl-D on a terminal
            if terminal:
                print(file=sys.stderr)  # so the shell's prompt starts on its own line
            if prompt:
                yield prompt
            return
        line = line.removesuffix("\n").removesuffix("\r")  # a piped Windows file ends its lines in \r\n
        if line.endswith("\\"):
            prompt += line[:-1] + "\n"
            continue
        prompt += line
        if prompt:
            yield prompt
        prompt = ""


def bounded(text: str, what: str) -> str:
    """`text`, read as at most MAX_PROMPT_CHARS + 1 characters, unless it is longer than a prompt may be."""
    if len(text) > MAX_PROMPT_CHARS:
        raise MiniGPTError(too_long(what))
    return text


def too_long(what: str) -> str:
    return (
        f"{what} is longer than {MAX_PROMPT_CHARS:,} characters (a device or an endless stream?): only its last "
        "block_size tokens would be used, so pass the end of it"
    )


def read_prompt(prompt: str | None, prompt_file: str | None) -> str:
    """The prompt from --prompt, --prompt_file, or a piped standard input; empty when there is none."""
    if prompt_file is not None:
        try:
            with open(prompt_file, encoding="utf-8") as f:
                return bounded(f.read(MAX_PROMPT_CHARS + 1), f"prompt file {prompt_file!r}")
        except (OSError, UnicodeDecodeError) as err:
            raise MiniGPTError(f"cannot read prompt file {prompt_file!r}: {err}") from None
    # A closed standard input (`<&-`) is None: like a terminal, it holds no prompt unless `-` asks for one.
    if prompt == "-" or (prompt is None and sys.stdin is not None and not sys.stdin.isatty()):
        if sys.stdin is None:
            raise MiniGPTError("--prompt - reads standard input, but it is closed: pass --prompt TEXT or --prompt_file")
        try:
            text = bounded(sys.stdin.read(MAX_PROMPT_CHARS + 1), "the prompt on standard input")
        except (OSError, UnicodeDecodeError) as err:
            raise MiniGPTError(f"cannot read the prompt from standard input: {err}") from None
        try:
            return as_utf8(text)
        except ValueError as err:
            raise MiniGPTError(f"the prompt on standard input is {err}") from None
    return prompt or ""


def print_completions(
    prompt: str, pieces: Iterator[tuple[int, str]], num_samples: int, keep: bool = True, most_tokens: int | None = None
) -> list[str]:
    """Print the prompt and each completion, and return the completions.

    One sample streams as it comes; with `keep` False it is not held once printed (its completion is
    returned as ""), so a long run's memory stays flat. Several print together, each under a divider line,
    with a progress bar on a terminal until then (out of `most_tokens` per sample, when given).
    """
    streaming = num_samples == 1
    if streaming:
        print(prompt, end="", flush=True)
    else:
        total = most_tokens * num_samples if most_tokens else None
        pieces = tqdm(pieces, desc="sampling", total=total, unit="tok", disable=None, leave=False)
    texts: list[list[str]] = [[] for _ in range(num_samples)]
    for i, piece in pieces:
        if streaming:
            print(piece, end="", flush=True)
        if keep or not streaming:  # several samples print at the end, so they are always kept
            texts[i].append(piece)
    completions = ["".join(t) for t in texts]
    if streaming:
        print()
    else:
        for i, text in enumerate(completions, 1):
            print(f"{DIVIDER} sample {i}/{num_samples} {DIVIDER}")
            print(prompt + text)
    return completions


if __name__ == "__main__":
    raise SystemExit(run(main))
