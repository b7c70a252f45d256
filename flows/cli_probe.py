"""`clef probe`: linear probes of a checkpoint's (or a random initialisation's) frozen image
features on a dataset's fold (`clef_core.training.probe`); JSON, table, plot and MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flows.cli_train import DataDir, MlflowUri, Preset, Sets
from flows.console import quiet_libraries

console = Console()


def probe(
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            help="A checkpoint folder (stage 1 or 2), or 'random': a fresh init of the "
            "preset's architecture (repeatable: all are probed on the same split).",
        ),
    ],
    dataset: Annotated[str, typer.Option(help="AU dataset with activities: bp4d, bp4d_plus.")],
    out: Annotated[Path, typer.Option(help="The JSON file to write (table and plot beside).")],
    fold: Annotated[int, typer.Option(help="Fold number: probes fit on its training parts.")] = 1,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    preset: Preset = "cpu-tiny",
    sets: Sets = None,
    data_dir: DataDir = None,
    mlflow_uri: MlflowUri = None,
) -> None:
    """Probe frozen image features for AUs, activity and identity, on people held out."""
    import torch

    from clef_core.common.errors import ClefError
    from clef_core.common.runtime import use_data_dir
    from clef_core.run.reproduction import resolve_config
    from clef_core.training.cache import verify_shards
    from clef_core.training.evaluate import device_or_error
    from clef_core.training.probe import RANDOM
    from clef_core.training.probe_cache import cached_probe
    from flows.probes import label_of, record_probes
    from flows.train import new_reproduction_id, run_book

    if out.is_dir():
        raise ClefError(f"--out is a folder ({out}): expected the path of a JSON file to write")
    cfg = resolve_config(preset, sets or [], data_dir, None, mlflow_uri)
    use_data_dir(cfg.data.data_dir)
    quiet_libraries(cfg.data.data_dir / "logs" / "clef.log", prefect=False)
    verify_shards(cfg.data.shard_dir, dataset)
    for spec in model:
        if spec != RANDOM and not (Path(spec) / "meta.json").is_file():
            raise ClefError(
                f"--model {spec}: expected a checkpoint folder (meta.json, model.pt) or 'random'"
            )
    target = torch.device(device_or_error(device))
    results = []
    with console.status("probing") as status:
        for spec in model:
            status.update(f"probing {label_of(spec)}: features, then the probes")
            results.append((label_of(spec), cached_probe(cfg, spec, dataset, fold, target)))
    folder = out.parent / f"{out.stem}-files"
    book = run_book(cfg, new_reproduction_id())
    written = record_probes(book, results, folder)
    book.close()
    rows = json.loads(written.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows if len(rows) > 1 else rows[0], indent=1))
    from rich.markdown import Markdown

    console.print(Markdown((folder / "probes.md").read_text()))
    console.print(f"{out}; table and plot: {folder}")


def register(app: typer.Typer) -> None:
    app.command()(probe)
