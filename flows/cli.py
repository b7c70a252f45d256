"""The `clef` command line. Thin: each command parses arguments and calls library code.

Heavy imports (torch, ray, prefect) happen inside the commands, so `clef --help` is instant.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from clef_core import __version__
from clef_core.errors import ClefError

app = typer.Typer(
    name="clef",
    help="CLEF facial-behaviour pipeline: synthetic data, preprocessing, training, prediction.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show resolved experiment configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")
console = Console()
err_console = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value, e.g. --set stage1.epochs=1 (repeatable)."),
]


@app.command()
def version() -> None:
    """Print the package version and the pinned stack it runs on."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    console.print(f"clef {__version__}")
    for dist in ("torch", "open_clip_torch", "ray", "prefect", "mlflow", "pyarrow", "decord"):
        try:
            console.print(f"  {dist} {dist_version(dist)}")
        except PackageNotFoundError:
            console.print(f"  {dist} (not installed)")


@config_app.command("show")
def config_show(
    preset: Annotated[
        str, typer.Argument(help="Preset name (default, paper, cpu-tiny, ...).")
    ] = "default",
    overrides: SetOption = None,
) -> None:
    """Print the resolved config of PRESET with any --set overrides applied, as YAML."""
    from clef_core.config import load_config

    cfg = load_config(preset, overrides or [])
    typer.echo(cfg.to_yaml(), nl=False)


@config_app.command("presets")
def config_presets() -> None:
    """List the named presets."""
    from clef_core.config import known_presets

    for name in known_presets():
        typer.echo(name)


def main() -> None:
    """Console-script entry point: user errors become one line and exit code 2."""
    try:
        app()
    except ClefError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
