"""Every `minigpt ...` command that README.md and the pages under docs/ show parses with today's options (a
renamed option breaks this), and every relative link and image in them points at a file that exists."""

from __future__ import annotations

import re
import shlex
import shutil
import unicodedata
from pathlib import Path

import pytest

from minigpt.cli import attention, export, generate, train
from minigpt.cli import eval as evaluate
from minigpt.cli.common import canonical_options
from minigpt.training import options as train_options
from tests.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"[\[<]|\.\.\.|COMMAND")  # syntax summaries such as `minigpt eval --ckpt RUN [--split val]`


def name(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


def page_commands(page: Path) -> list[str]:
    """The command lines in a page's code blocks and inline code that run `minigpt` (with or without
    `$ `, `srun ` or environment variables in front)."""
    text = page.read_text()
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


COMMANDS = [(name(page), command) for page in PAGES for command in page_commands(page)]


def test_the_pages_show_every_command():
    assert {command.split()[1] for _, command in COMMANDS} == {"train", "generate", "attention", "eval", "export"}


def test_the_readme_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert [page for page in PAGES[1:] if f"](docs/{page.name})" not in readme] == []


@pytest.mark.parametrize(("page", "line"), COMMANDS, ids=[f"{page}: {line}" for page, line in COMMANDS])
def test_each_command_parses(page, line, tmp_path, monkeypatch):
    name, *args = shlex.split(line, comments=True)[1:]
    args = canonical_options(args)
    if name == "train":
        run = tmp_path / "run"  # --resume needs a run folder; the page's is not there
        run.mkdir()
        shutil.copy(train_options.DEFAULT_CONFIG, run / "config.yaml")
        (run / "last.ckpt").touch()
        monkeypatch.setattr(train_options, "resume_path", lambda path: run / "last.ckpt")
        if "--list_configs" in args or "--help" in args:  # these print and exit before parsing
            return
        train.parse(args)
    else:
        parsers = {"generate": generate, "attention": attention, "eval": evaluate, "export": export}
        parser = parsers[name].build_parser
        parser().parse_args(args)


# Links: [text](target) and ![alt](target), outside code blocks and inline code.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """The page without its fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens,
    a repeated heading numbered."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*$", prose_keeping_headings(page.read_text()), re.M):
        slug = "".join(c for c in heading.lower() if c in " -_" or unicodedata.category(c)[0] in "LN")
        slug = slug.replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def prose_keeping_headings(text: str) -> str:
    """The page without its fenced code blocks (a `#` comment there is no heading); inline code stays,
    since its text is part of a heading's anchor."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


LINKS = [(name(page), target) for page in PAGES for target in LINK.findall(prose(page.read_text()))]


def test_the_pages_have_links():
    assert len(LINKS) > 20  # the pattern finds them


@pytest.mark.parametrize(("page", "target"), LINKS, ids=[f"{page} -> {target}" for page, target in LINKS])
def test_each_relative_link_resolves(page, target):
    if re.match(r"^[a-z][a-z+.-]*:", target):  # https:, mailto: ...: not checked offline
        return
    path, _, anchor = target.partition("#")
    source = REPO / page
    linked = (source.parent / path).resolve() if path else source
    assert linked.exists(), f"{page}: {target} points at {linked}, which does not exist"
    if anchor and linked.suffix == ".md":
        assert anchor in anchors(linked), f"{page}: {target}: {name(linked)} has no heading with anchor #{anchor}"


@pytest.mark.slow
def test_the_readme_python_api_example_runs(tmp_path, monkeypatch, shakespeare):
    """The front page's Python example, as written, on tiny-shakespeare (a 25 s shakespeare_cpu run)."""
    block = re.search(r"## Python API\n\n```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "cache"))
    exec(compile(block.replace("../shared/data/tinyshakespeare.txt", str(shakespeare)), "README.md", "exec"), {})
    assert (tmp_path / "attention" / "heads.json").is_file() and (tmp_path / "hf_model" / "config.json").is_file()


def test_the_file_tree_has_a_line_for_every_file() -> None:
    """The README's "Files" section gives every file of the package, the tests, the benchmarks and the docs one
    line; a file added without its line fails here."""
    listed = {line.split()[0] for line in (REPO / "README.md").read_text().splitlines() if line and not line[0].isspace()}
    files = [path for folder in ("minigpt", "tests", "bench", "docs", "examples") for path in (REPO / folder).rglob("*")
             if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith(".")]  # fmt: skip
    missing = sorted(str(path.relative_to(REPO)) for path in files if str(path.relative_to(REPO)) not in listed)
    assert not missing, f"add a line to README.md's Files section for: {missing}"
