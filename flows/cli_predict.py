"""`clef predict`: per-frame AU / expression tables (and plots) for videos, images, folders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console

if TYPE_CHECKING:  # heavy imports stay inside the command: `clef --help` is instant
    from flows.predict import InputResult

console = Console()


Inputs = Annotated[list[Path], typer.Argument(help="Video files, image files and folders.")]
Models = Annotated[
    list[str],
    typer.Option(
        help="Checkpoint folder, models:/NAME/VERSION, runs:/ID/model or a registered name (repeatable: AU + FER)."
    ),
]
Out = Annotated[Path, typer.Option(help="Where the per-input CSV/Parquet tables go.")]
Device = Annotated[str, typer.Option(help="cpu or cuda.")]
BatchSize = Annotated[
    int | None,
    typer.Option(min=1, help="Faces scored per batch (default: 32 on cpu, 256 on cuda)."),
]
Every = Annotated[int, typer.Option(min=1, help="Predict every N-th frame.")]
Labels = Annotated[
    list[str] | None,
    typer.Option("--labels", help="Free-text label scored zero-shot (repeatable)."),
]
Plot = Annotated[
    bool, typer.Option(help="A PNG per input: AU probabilities over time, expressions.")
]
MlflowUri = Annotated[str | None, typer.Option(help="MLflow tracking URI for models:/ and names.")]
Precision = Annotated[
    Literal["auto", "bf16", "fp32"],
    typer.Option(
        help="auto: the model's own (bf16 for the paper preset) where the hardware computes "
        "bf16 natively (CUDA; a CPU with AVX512-BF16 or AMX), else fp32.",
    ),
]
COLUMNS = ("input", "frames", "faces", "s", "frames/s", "table", "note")


def predict(
    inputs: Inputs,
    model: Models,
    out: Out = Path("predictions"),
    device: Device = "cpu",
    batch_size: BatchSize = None,
    every: Every = 1,
    labels: Labels = None,
    plot: Plot = False,
    mlflow_uri: MlflowUri = None,
    precision: Precision = "auto",
) -> None:
    """Per-frame AUs and expressions for your videos and images, with a CLEF model."""
    import sys

    from rich.table import Table

    from clef_core.common.errors import ClefError
    from clef_core.common.runtime import default_data_dir, default_tracking_uri
    from clef_core.inference.predictor import Predictor
    from clef_core.training.evaluate import device_or_error
    from flows.console import print_table, quiet_libraries
    from flows.predict import expand, plot_item, predict_item, unique_names

    if out.exists() and not out.is_dir():
        raise ClefError(f"--out {out} is a file: expected a folder for the tables (or a new path)")
    quiet_libraries(default_data_dir() / "logs" / "clef.log", ray=False, prefect=False)
    uri = mlflow_uri or default_tracking_uri(default_data_dir())
    set_cpu_threads()
    predictor = Predictor.from_uri(model, device_or_error(device), batch_size, labels or None, uri,
                                   precision=precision)  # fmt: skip
    items, problems = expand(inputs)
    items, renamed = unique_names(items)
    for message in problems:
        console.print(f"[red]skipped:[/] {message}", highlight=False, soft_wrap=True)
    for message in renamed:
        console.print(f"[yellow]renamed:[/] {message}", highlight=False, soft_wrap=True)
    table = Table(title=f"clef predict -> {out}")
    for col in COLUMNS:
        table.add_column(col)
    failed, warned = len(problems), 0
    for name, files in items:
        with console.status(f"{name}..."):
            r = predict_item(predictor, name, files, out, every)
        if r.rows and plot:
            plot_item(r, predictor, out / f"{name}.png")
        failed += bool(r.error) or not r.rows
        warned += bool(r.warning and r.rows)
        table.add_row(*_show(name, r))
    print_table(console, table)
    if warned:
        console.print(f"[yellow]{warned} video(s) ended before their header's frame count[/]: "
                      "their decodable frames are in the tables (listed above)")  # fmt: skip
    if failed:  # every good input's table is written; exit 1 says some input was bad
        console.print(f"[red]{failed} input(s) could not be read[/] (listed above)")
        sys.exit(1)


def _show(name: str, r: InputResult) -> tuple[str, ...]:
    """Print one input's line; its row of the closing table (COLUMNS)."""
    rate = r.frames / r.seconds if r.seconds else 0.0
    note = r.error or ("no frame could be read" if not r.rows else "")
    if r.warning and r.rows:  # kept, not failed: every decodable frame has its row
        note = f"warning: {r.warning}"
    console.print(
        f"{name}: {r.frames} frames, {r.faces} faces, {r.seconds:.1f} s, {rate:.0f} frames/s"
        + (f" [yellow]({note})[/]" if note else ""),
        highlight=False,
    )
    return (name, str(r.frames), str(r.faces), f"{r.seconds:.1f}", f"{rate:.0f}",
            str(r.table or "-"), note)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command()(predict)


def set_cpu_threads() -> None:
    """Half the cores per torch op: faces are found in one thread and scored in another, and
    two threads sharing one intra-op pool of every core spin against each other (on 2 cores,
    measured: 88 frames per CPU-second with 2 intra-op threads, 200 with 1)."""
    import os

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
