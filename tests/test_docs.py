"""The documentation stays true to the code (README.md and the site's pages, docs/*.md).

- Every `clef ...` command line in a ```bash block parses against the real Typer app: the
  subcommand chain is resolved and each command's options are parsed by its own
  `make_context`, as the console script would, on a copy of the arguments; nothing runs.
  `clef submit -- <command>` checks the submitted command too.
- Every `make <target>` the docs name (in a bash block or an inline code span) is a target of
  the Makefile.
- Every relative link and image of README.md names a file that exists, and a `#anchor` on a
  docs page names one of its headings.
- The CLI reference page (generated at build time by docs/hooks/cli_reference.py) has every
  command.

Each check is also run on a wrong input, to show it can fail. `make docs` builds the site
itself (`mkdocs build --strict`: the site's own links and anchors).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from markdown.extensions.toc import slugify

from flows.cli import app
from flows.console import verbose_argument_first

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCS = [README, *PAGES]


def bash_blocks(text: str) -> list[str]:
    """The bodies of the ```bash fenced blocks of a markdown text."""
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S)


def shell_lines(block: str) -> list[list[str]]:
    """A bash block's command lines as words: continuation lines (a trailing backslash, or a
    quote left open) joined, comments dropped."""
    lines, buffer = [], ""
    for raw in block.splitlines():
        buffer += raw[:-1] + " " if raw.endswith("\\") else raw + "\n"
        if raw.endswith("\\"):
            continue
        try:
            words = shlex.split(buffer, comments=True)
        except ValueError:  # a quote spans lines (a JSON parameter): read on
            continue
        if words:
            lines.append(words)
        buffer = ""
    assert not buffer.strip(), f"unterminated shell line: {buffer!r}"
    return lines


# Placeholders the docs write in a command line, normalised before it is parsed (deliberately,
# and only these): `[--opt X]` marks an optional part (the brackets go, the words stay) and
# `...` means "more of the same" (it goes). Placeholder values such as `<key>` or
# `http://<head>:8265` are ordinary strings to the parser and stay.
def normalise(line: str) -> str:
    return re.sub(r"\.\.\.(?=\s|$|\])", "", line).replace("[", " ").replace("]", " ")


def clef_commands(block: str) -> list[list[str]]:
    """The argument lists of every `clef` invocation in a bash block: a line that starts with
    `clef` (or .venv/bin/clef), one after `--` (`ray job submit ... -- clef ...`) and a
    command substitution `$(clef ...)`."""
    found: list[list[str]] = []
    for words in shell_lines(normalise(block)):
        for i, word in enumerate(words):
            for sub in re.findall(r"\$\((clef\b[^)]*)\)", word):
                found.append(shlex.split(sub)[1:])
            if (word == "clef" or word.endswith("/bin/clef")) and (i == 0 or words[i - 1] == "--"):
                rest = words[i + 1 :]
                stops = [j for j, w in enumerate(rest) if w in {"|", "&&", ";", ">", "||"}]
                found.append(rest[: stops[0]] if stops else rest)
    return found


def parse_clef(args: list[str]) -> list[str]:
    """Parse `clef ARGS` as `flows.cli.main` would (its `--verbose` moved first), resolving
    each group's subcommand as Typer's `TyperGroup.invoke` does, without invoking anything.
    Returns the command path (e.g. ["stack", "up"]); a bad line raises Typer's UsageError."""
    args = verbose_argument_first(list(args))
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("clef", list(args))
    path: list[str] = []
    while hasattr(command, "resolve_command"):
        rest = [*ctx._protected_args, *ctx.args]  # what TyperGroup.invoke resolves
        if not rest:
            raise AssertionError(f"`clef {' '.join(path)}` needs a subcommand")
        name, command, rest = command.resolve_command(ctx, rest)
        path.append(name)
        ctx = command.make_context(name, list(rest), parent=ctx)
    if path == ["submit"]:  # `clef submit -- finetune ...`: the submitted command parses too
        parse_clef(list(ctx.params["args"] or []))
    return path


def doc_commands() -> list[tuple[str, list[str]]]:
    return [
        (doc.relative_to(ROOT).as_posix(), args)
        for doc in DOCS
        for block in bash_blocks(doc.read_text())
        for args in clef_commands(block)
    ]


def test_every_documented_clef_command_parses() -> None:
    commands = doc_commands()
    covered = set()
    failures = []
    for doc, args in commands:
        try:
            covered.add(" ".join(parse_clef(args)))
        except (typer.TyperException, AssertionError) as err:
            failures.append(f"{doc}: clef {shlex.join(args)}\n    {err}")
    assert not failures, "\n".join(failures)
    # The extraction finds what the docs show (so an empty match cannot pass silently).
    assert len(commands) >= 25
    for command in ("preprocess", "reproduce", "predict", "submit", "stack up", "config show"):
        assert command in covered


def test_the_command_check_can_fail() -> None:
    assert parse_clef(["finetune", "--dataset", "bp4d", "--fold", "1"]) == ["finetune"]
    assert parse_clef(["finetune", "--dataset", "bp4d", "--verbose"]) == ["finetune"]
    with pytest.raises(typer.TyperException, match="No such option"):
        parse_clef(["finetune", "--dataset", "bp4d", "--no-such-option", "1"])
    with pytest.raises(typer.TyperException, match="No such command"):
        parse_clef(["fine-tune", "--dataset", "bp4d"])
    with pytest.raises(typer.TyperException, match="Missing parameter: dataset"):
        parse_clef(["preprocess", "--root", "/data/BP4D"])
    with pytest.raises(typer.TyperException, match="valid integer"):
        parse_clef(["evaluate", "--dataset", "bp4d", "--fold", "one"])
    with pytest.raises(typer.TyperException, match="No such option"):
        parse_clef(["submit", "--", "finetune", "--dataset", "bp4d", "--epochs", "1"])
    # And as the docs are read: a made-up option in a bash block is found and rejected.
    block = "clef pretrain --dataset bp4d [--fold 1] --made-up x   # a comment\n"
    (args,) = clef_commands(block)
    assert args == ["pretrain", "--dataset", "bp4d", "--fold", "1", "--made-up", "x"]
    with pytest.raises(typer.TyperException, match="No such option"):
        parse_clef(args)


def test_extraction_reads_the_shell_forms_the_docs_use() -> None:
    block = (
        'eval "$(clef stack env)"   # exports\n'
        "ray job submit --address A -- \\\n  clef finetune --dataset bp4d\n"
        "clef zeroshot [--seen happiness --seen sadness ...] | tee out\n"
        'prefect deployment run clef/full --param roots=\'{"a":\n  "b"}\'\n'
    )
    assert clef_commands(block) == [
        ["stack", "env"],
        ["finetune", "--dataset", "bp4d"],
        ["zeroshot", "--seen", "happiness", "--seen", "sadness"],
    ]


def make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.$() -]+?)\s*:(?!=)", line)
        if match and not line.startswith((" ", "\t")):
            targets.update(match[1].split())
    return targets


def named_make_targets(text: str) -> set[str]:
    """`make X` in a bash block's lines or in an inline code span."""
    code = [line for block in bash_blocks(text) for line in block.splitlines()]
    code += re.findall(r"`([^`\n]+)`", text)
    return {m for line in code for m in re.findall(r"(?:^|&&|;|\s)make\s+([a-z][\w-]*)", line)}


def test_every_named_make_target_exists() -> None:
    targets = make_targets()
    assert {"demo", "test", "test-fast", "docs", "lint"} <= targets
    named = {(doc.name, t) for doc in DOCS for t in named_make_targets(doc.read_text())}
    assert {t for _, t in named} >= {"demo", "test", "docs"}
    missing = sorted(f"{doc}: make {t}" for doc, t in named if t not in targets)
    assert not missing, missing
    # The check can fail: a target the Makefile lacks is found and is not among the targets.
    assert named_make_targets("run `make deploy-docs` first") == {"deploy-docs"}
    assert "deploy-docs" not in targets


def relative_links(text: str) -> list[str]:
    """Targets of markdown links and images that are not URLs or same-page anchors."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # links in code are not links
    links = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text)
    return [link for link in links if not re.match(r"^(?:[a-z]+:|#)", link)]


def headings(page: Path) -> set[str]:
    """A page's heading anchors as the site's toc extension makes them."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return {slugify(h, "-") for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


def broken_links(doc: Path, text: str) -> list[str]:
    broken = []
    for link in relative_links(text):
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve()
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in headings(target):
            broken.append(f"{link}: no heading #{anchor} in {path}")
    return broken


def test_readme_links_and_images_exist() -> None:
    text = README.read_text()
    assert len(relative_links(text)) >= 10
    assert any(link.startswith("docs/img/") for link in relative_links(text))
    assert not broken_links(README, text)
    # The check can fail: a missing file and a missing heading are both reported.
    wrong = "![x](docs/img/nope.png) [y](docs/method.md#no-such-heading) [z](https://a.b)"
    assert broken_links(README, wrong) == [
        "docs/img/nope.png: no such file",
        "docs/method.md#no-such-heading: no heading #no-such-heading in docs/method.md",
    ]


def test_readme_is_a_front_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 250
    assert "make demo" in "\n".join(lines[:40]) and "make test" in "\n".join(lines[:40])


def load_hook() -> Any:
    spec = importlib.util.spec_from_file_location(
        "cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def all_command_paths() -> list[str]:
    root: Any = typer.main.get_command(app)
    ctx = root.make_context("clef", ["version"])
    paths = []

    def walk(command: Any, prefix: str) -> None:
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            paths.append(f"{prefix} {name}")
            if hasattr(sub, "list_commands"):
                walk(sub, f"{prefix} {name}")

    walk(root, "clef")
    return paths


def test_the_generated_cli_reference_has_every_command() -> None:
    page = load_hook().render()
    paths = all_command_paths()
    assert {"clef preprocess", "clef stack up", "clef config show"} <= set(paths)
    missing = [p for p in paths if f"\n## {p}\n" not in page]
    assert not missing, missing
    assert "`--dataset <str>`" in page and "--no-reduce-decode" in page
    assert "## clef no-such-command" not in page
    # No page of that name is written by hand: the hook's would clash with it.
    assert not (ROOT / "docs" / "cli.md").exists()
