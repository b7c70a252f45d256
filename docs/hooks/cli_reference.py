"""MkDocs hook: the CLI reference page (`cli.md`), generated from the Typer app at build time.

It walks the command tree Typer builds for `flows.cli:app` (the `clef` console script) with
`typer.main.get_command` and writes each command's help, usage, arguments and options, as
`clef <command> --help` shows them. Nothing is run. Typer 0.29 carries its own copy of
click's classes (`typer._click`), so only the Typer objects' own methods are used here:
`get_params`, `get_help_record`, `get_usage`, `list_commands` and `get_command`.

`tests/test_docs.py` imports `render` to check that every command is on the page.
"""

from __future__ import annotations

import html
import inspect
import re
from typing import Any

PAGE = "cli.md"


def _text(text: str) -> str:
    """Help text as markdown: code spans kept, `<`, `>` and `&` escaped outside them."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else html.escape(p, quote=False) for p in parts)


def _description(command: Any) -> str:
    """A command's docstring as paragraphs (click's `\\b` no-rewrap markers dropped)."""
    doc = inspect.cleandoc(command.help or "")
    lines = [line for line in doc.splitlines() if line.strip() != "\b"]
    return _text("\n".join(lines).strip())


def _param_lines(command: Any, ctx: Any, arguments: bool) -> list[str]:
    lines = []
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False) or (param.param_type_name == "argument") != arguments:
            continue
        if param.opts == ["--help"]:  # every command has it; said once at the top
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        decl, help_text = record
        lines.append(f"- `{decl}`: {_text(help_text)}" if help_text else f"- `{decl}`")
    return lines


def _commands(command: Any, ctx: Any) -> list[tuple[Any, Any]]:
    """(command, context) for `command` and every command below it, depth first."""
    from typer._click import Context

    found = [(command, ctx)]
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                found += _commands(sub, Context(sub, info_name=name, parent=ctx))
    return found


def render() -> str:
    """The CLI reference page, as markdown."""
    import typer
    from typer._click import Context

    from flows.cli import app

    root = typer.main.get_command(app)
    out = [
        "# CLI reference",
        "",
        "Generated at build time from the Typer app (`flows.cli:app`, the `clef` console",
        f"script; Typer {typer.__version__}) by `docs/hooks/cli_reference.py`: each command's",
        "`--help`, not written by hand. Every command takes `--help`; `--verbose` is accepted",
        "after the command as well.",
        "Exit codes of every command: [Faults and failure semantics](faults.md#exit-codes).",
        "",
    ]
    for command, ctx in _commands(root, Context(root, info_name="clef")):
        out += [f"## {ctx.command_path}", ""]
        description = _description(command)
        if description:
            out += [description, ""]
        out += ["```text", command.get_usage(ctx), "```", ""]
        for title, arguments in (("Arguments", True), ("Options", False)):
            lines = _param_lines(command, ctx, arguments)
            if lines:
                out += [f"**{title}**", "", *lines, ""]
        if hasattr(command, "list_commands"):
            subs = [(name, command.get_command(ctx, name)) for name in command.list_commands(ctx)]
            rows = [
                f"- [`{name}`](#{(ctx.command_path + ' ' + name).replace(' ', '-')}): "
                f"{_text(sub.get_short_help_str(200))}"
                for name, sub in subs
                if sub is not None and not sub.hidden
            ]
            out += ["**Commands**", "", *rows, ""]
    return "\n".join(out)


def on_files(files: Any, config: Any) -> Any:
    """Add the generated page to the site's files (MkDocs event)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files
