"""Every `minigpt ...` command the README shows parses with today's options (a renamed option breaks this)."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from minigpt.cli import attention, export, generate, train
from minigpt.cli import eval as evaluate
from minigpt.cli.common import canonical_options
from tests.helpers import REPO

README = REPO / "README.md"
PLACEHOLDER = re.compile(r"[\[<]|\.\.\.|COMMAND")  # syntax summaries such as `minigpt eval --ckpt RUN [--split val]`


def readme_commands() -> list[str]:
    """The command lines in the README's code blocks and inline code that run `minigpt` (with or without
    `$ `, `srun ` or environment variables in front)."""
    text = README.read_text()
    found, inside = [], False
    for line in text.replace("\\\n", " ").splitlines():  # a trailing backslash continues a shell line
        if line.startswith("```"):
            inside = not inside
        elif inside:
            found.append(line)
    spans = re.findall(r"`([^`\n]*minigpt [a-z]+ -[^`\n]*)`", text)  # inline commands with options
    found += [span for span in spans if not PLACEHOLDER.search(span)]
    commands = []
    for line in found:
        match = re.match(r"^(?:\$ |srun |[A-Z_]+=\S+ )*(minigpt [a-z]+.*)$", line.strip())
        if match:
            commands.append(match.group(1))
    return commands


COMMANDS = readme_commands()


def test_the_readme_shows_every_command():
    assert {c.split()[1] for c in COMMANDS} == {"train", "generate", "attention", "eval", "export"}


@pytest.mark.parametrize("line", COMMANDS)
def test_each_readme_command_parses(line, tmp_path, monkeypatch):
    name, *args = shlex.split(line, comments=True)[1:]
    args = canonical_options(args)
    if name == "train":
        run = tmp_path / "run"  # --resume needs a run folder; the README's is not there
        run.mkdir()
        shutil.copy(train.DEFAULT_CONFIG, run / "config.yaml")
        (run / "last.ckpt").touch()
        monkeypatch.setattr(train, "_resume_path", lambda path: run / "last.ckpt")
        if "--list_configs" in args or "--help" in args:  # these print and exit before parsing
            return
        train.parse(args)
    else:
        parsers = {"generate": generate, "attention": attention, "eval": evaluate, "export": export}
        parser = parsers[name].build_parser
        parser().parse_args(args)
