"""The `clef` command line. Thin: each command parses arguments and calls library code.

Heavy imports (torch, ray, prefect) happen inside the commands, so `clef --help` is instant.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clef_core import __version__
from clef_core.common.errors import ClefError
from flows import (
    cli_explain,
    cli_predict,
    cli_probe,
    cli_reproduce,
    cli_stack,
    cli_train,
    cli_zeroshot,
)
from flows.console import print_table, verbose_argument_first

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


@app.callback()
def _options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Show the libraries' own log lines (Ray, Ray Data, Prefect, MLflow) on the "
            "console too; they always go to <data dir>/logs/clef.log. Accepted after the "
            "command as well.",
        ),
    ] = False,
) -> None:
    """CLEF facial-behaviour pipeline: synthetic data, preprocessing, training, prediction."""
    from flows.console import set_verbose

    set_verbose(verbose)


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
    from clef_core.method.config import load_config

    cfg = load_config(preset, overrides or [])
    typer.echo(cfg.to_yaml(), nl=False)


@config_app.command("presets")
def config_presets() -> None:
    """List the named presets."""
    from clef_core.method.config import known_presets

    for name in known_presets():
        typer.echo(name)


@app.command()
def synth(
    out: Annotated[
        Path, typer.Option(help="Output directory (one folder per dataset layout).")
    ] = Path("data/synthetic"),
    preset: Annotated[
        str, typer.Option(help="Size preset: test (seconds) or demo (minutes).")
    ] = "demo",
    datasets: Annotated[
        str | None,
        typer.Option(help="Comma list of bp4d,bp4d_plus,disfa,rafdb,affectnet,ferplus,videos."),
    ] = None,
    subjects: Annotated[
        int | None,
        typer.Option(help="Subjects per AU dataset (at most as many as the real one has)."),
    ] = None,
    frames_per_task: Annotated[int | None, typer.Option(help="Frames per BP4D/BP4D+ task.")] = None,
    image_size: Annotated[str | None, typer.Option(help="Frame size WxH, e.g. 640x480.")] = None,
    fer_images: Annotated[int | None, typer.Option(help="Images per FER dataset.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same bytes).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Parallel processes (default: all cores).")
    ] = None,
) -> None:
    """Generate the synthetic face datasets in the real BP4D/BP4D+/DISFA/RAF-DB/AffectNet/FERPlus layouts."""
    import os

    from rich.table import Table

    from synthetic.generate import generate
    from synthetic.spec import make_spec, parse_size

    spec = make_spec(
        out,
        preset,
        datasets=tuple(d.strip() for d in datasets.split(",") if d.strip()) if datasets else None,
        subjects=subjects,
        frames_per_task=frames_per_task,
        image_size=parse_size(image_size) if image_size else None,
        fer_images=fer_images,
        seed=seed,
        workers=workers or os.cpu_count() or 1,
    )
    summaries = generate(spec)
    table = Table(title=f"synthetic data in {out}")
    for col in ("dataset", "units", "frames", "no face", "seconds", "frames/s"):
        table.add_column(col, justify="left" if col == "dataset" else "right")
    for s in summaries:
        rate = s.frames / s.seconds if s.seconds else 0.0
        table.add_row(
            s.dataset,
            str(s.units),
            str(s.frames),
            str(s.no_face),
            f"{s.seconds:.1f}",
            f"{rate:.0f}",
        )
    print_table(console, table)


@app.command()
def preprocess(
    dataset: Annotated[
        str,
        typer.Option(
            help="bp4d, bp4d_plus, disfa, rafdb, affectnet7, affectnet8, ferplus or video."
        ),
    ],
    root: Annotated[Path, typer.Option(help="The dataset's root, as released.")],
    out: Annotated[
        Path, typer.Option(help="Shard directory (shards go to OUT/<dataset>/).")
    ] = Path("data/shards"),
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address; default: a local Ray instance.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild shards that already exist.")] = False,
    image_size: Annotated[int, typer.Option(help="Side of the aligned face crops.")] = 224,
    reduce_decode: Annotated[
        bool,
        typer.Option(
            help="Decode frame images (BP4D, BP4D+) at 1/2-1/8 scale while the face crop "
            "stays larger than its final size: faster, and antialiased."
        ),
    ] = True,
) -> None:
    """Extract and align faces from a dataset into Parquet shards (resumable, distributed with Ray)."""
    from flows.console import quiet_libraries
    from flows.preprocess import preprocess_dataset
    from preprocessing.pipeline import PreprocessOptions

    opts = PreprocessOptions(
        dataset=dataset,
        root=root,
        shard_dir=out,
        image_size=image_size,
        force=force,
        reduce_decode=reduce_decode,
    )
    quiet_libraries(out.resolve().parent / "logs" / "clef.log", prefect=False)  # <data>/shards
    manifest = preprocess_dataset(opts, ray_address, console)
    failed = len(manifest.failed_sequences) + manifest.unreadable
    if failed:  # the shards of every good input are written; exit 1 says some input was bad
        console.print(f"[red]{failed} input(s) could not be read[/] (listed above)")
        raise typer.Exit(1)


@app.command()
def demo(
    data_dir: Annotated[
        Path, typer.Option(help="Where data, runs and the MLflow store go.")
    ] = Path("data"),
    preset: Annotated[str, typer.Option(help="Config preset.")] = "cpu-tiny",
) -> None:
    """The main job on the embedded default: synthetic data (if absent), then `clef reproduce`."""
    from clef_core.common.runtime import use_data_dir

    root = use_data_dir(data_dir)
    synthetic = root / "synthetic"
    if (synthetic / "synth.json").exists():
        console.print(f"synthetic data already in {synthetic} (delete it to regenerate)")
    else:
        synth(out=synthetic, preset="demo")
    cli_reproduce.reproduce(preset=preset, data_dir=root, probes=True)


@app.command("sync-tracking")
def sync_tracking(
    data_dir: Annotated[Path, typer.Option(help="Data dir of the runs.")] = Path("data"),
    mlflow_uri: Annotated[
        str | None, typer.Option(help="Send to this MLflow URI; default: each run's own.")
    ] = None,
) -> None:
    """Send to MLflow what runs spooled while it did not answer (docs/faults.md)."""
    from flows.train import sync_tracking as sync

    left = sync(data_dir.resolve(), mlflow_uri)
    if left:
        console.print(f"[red]{sum(left.values())} calls of {len(left)} run(s) still not sent[/]: "
                      "their MLflow server does not answer; try again when it does")  # fmt: skip
        raise typer.Exit(1)
    console.print("every spooled tracking call is in MLflow")


cli_stack.register(app)
cli_train.register(app)
cli_reproduce.register(app)
cli_zeroshot.register(app)
cli_predict.register(app)
cli_probe.register(app)
cli_explain.register(app)


# Exit codes (docs/faults.md, "Exit codes"): 0 done; 1 some inputs could not be read (`preprocess`,
# `predict`: the good ones are written, the bad ones listed); 2 a bad argument, root, config or
# model, or a stack service that cannot start (one line); 3 a bug: any other exception, with its
# full traceback.
EXIT_BAD_ARGUMENT = 2
EXIT_BUG = 3


def main() -> None:
    """Console-script entry point: user errors become one line and exit code 2; anything
    else is a bug and keeps its traceback (exit code 3)."""
    from clef_core.common.runtime import configure_process

    configure_process()
    try:
        app(args=verbose_argument_first(sys.argv[1:]))
    except ClefError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_BAD_ARGUMENT)
    except Exception:
        traceback.print_exc()
        err_console.print("[bold red]clef stopped on a bug[/] (the traceback above)")
        sys.exit(EXIT_BUG)


if __name__ == "__main__":
    main()
