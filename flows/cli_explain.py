"""`clef explain`: relevancy heatmaps (the paper's Figure 4) for the faces in your images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from flows.cli_predict import Device, MlflowUri

console = Console()


def explain(
    images: Annotated[list[Path], typer.Argument(help="Image files with a face in each.")],
    model: Annotated[
        str,
        typer.Option(
            help="Checkpoint folder, models:/NAME/VERSION, runs:/ID/model or a registered name."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where the PNG grids and JSON files go.")] = Path(
        "explanations"
    ),
    labels: Annotated[
        list[str] | None,
        typer.Option("--labels", help="Free text to explain as well (repeatable)."),
    ] = None,
    device: Device = "cpu",
    layer: Annotated[
        str, typer.Option(help="ResNet stage for Grad-CAM (layer1-layer4; ViTs use GAE).")
    ] = "layer4",
    mlflow_uri: MlflowUri = None,
) -> None:
    """Where the image tower looks and which words the text tower weighs, per class prompt."""
    import sys

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from clef_core.common.errors import ClefError
    from clef_core.common.runtime import default_data_dir, default_tracking_uri
    from clef_core.inference.explain_plot import load_explainer
    from clef_core.training.evaluate import device_or_error
    from flows.console import quiet_libraries

    if layer not in ("layer1", "layer2", "layer3", "layer4"):
        raise ClefError(f"--layer {layer!r}: expected one of layer1, layer2, layer3, layer4")
    quiet_libraries(default_data_dir() / "logs" / "clef.log", ray=False, prefect=False)
    uri = mlflow_uri or default_tracking_uri(default_data_dir())
    cache = Path.home() / ".cache" / "clef" / "models"
    net, space = load_explainer(model, device_or_error(device), uri, cache)
    failed = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as progress:  # fmt: skip
        bar = progress.add_task("explaining", total=len(images))
        for path in images:
            progress.update(bar, description=f"explaining {path.name}")
            error = _explain_one(
                net, space, path, out, labels or (), model, layer, progress.console
            )
            if error:
                failed += 1
                progress.console.print(f"[red]skipped:[/] {error}", highlight=False, soft_wrap=True)
            progress.advance(bar)
    if failed:  # every good image's files are written; exit 1 says some input was bad
        console.print(f"[red]{failed} input(s) could not be explained[/] (listed above)")
        sys.exit(1)


def _explain_one(
    net: Any, space: Any, path: Path, out: Path, labels: Sequence[str], model: str, layer: str,
    shown: Console,
) -> str | None:  # fmt: skip
    """Explain one image (its PNG grid and JSON written); the reason it could not be, if not."""
    from clef_core.common.paths import missing
    from clef_core.inference.explain_plot import explain_image

    if not path.is_file():
        return missing(path, "no such file (expected an image file)")
    r = explain_image(net, space, path, out, labels, f"{path.name} - {model}", layer)
    if r.png is not None:
        shown.print(f"{path.name}: {r.png} and {r.json}", highlight=False)
    return r.error


def register(app: typer.Typer) -> None:
    app.command()(explain)
