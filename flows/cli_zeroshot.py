"""`clef zeroshot`: the zero-shot experiments as the CLEF poster runs them
(`clef_core.training.zeroshot`), in this process, recorded in MLflow, the table printed."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli_predict import Device
from flows.cli_train import DataDir, MlflowUri, Preset, Sets, console

Datasets = Annotated[
    list[str] | None,
    typer.Option(
        "--dataset",
        help="FER dataset: seen / unseen classes, and AUs -> its expressions (repeatable); "
        "default: rafdb and ferplus.",
    ),
]
AuDataset = Annotated[
    str | None,
    typer.Option(help="AU dataset trained on for AUs -> expressions; default: BP4D's."),
]
Seen = Annotated[
    list[str] | None,
    typer.Option(
        "--seen",
        help="A seen expression (repeatable); default: happiness, sadness, surprise, anger.",
    ),
]
Rows = Annotated[
    list[str] | None,
    typer.Option(
        "--rows",
        help="CLEF (stage 1, then stage 2) and/or FaRL (stage 2 only; repeatable); default: both.",
    ),
]
Seeds = Annotated[
    str | None,
    typer.Option(help="Seeds, comma-separated (e.g. 0,1,2); default: the config's seed."),
]


def zeroshot(
    preset: Preset = "cpu-tiny",
    datasets: Datasets = None,
    au_dataset: AuDataset = None,
    seen: Seen = None,
    rows: Rows = None,
    seeds: Seeds = None,
    device: Device = "cpu",
    sets: Sets = None,
    data_dir: DataDir = None,
    mlflow_uri: MlflowUri = None,
) -> None:
    """Zero-shot as the CLEF poster runs it: unseen expressions scored by their names, and AUs
    -> expressions, each with and without stage 1, scored among the unseen and all classes."""
    import torch
    from rich.markdown import Markdown
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from clef_core.common.runtime import use_data_dir
    from clef_core.run.reproduction import resolve_config
    from clef_core.tracking.spool import spool_dir
    from clef_core.tracking.zeroshot_report import record_zeroshot
    from clef_core.training.cache import verify_shards
    from clef_core.training.evaluate import device_or_error
    from clef_core.training.protocol import ZEROSHOT_AU, ZEROSHOT_FERS, zeroshot_datasets
    from clef_core.training.zeroshot import ROWS, check, run_zeroshot, steps
    from flows.train import new_reproduction_id, run_book, show_mlflow, tracking_uri

    fers, au = tuple(datasets or ZEROSHOT_FERS), au_dataset or ZEROSHOT_AU
    chosen, numbers = list(rows or ROWS), _seeds(seeds)
    cfg = resolve_config(preset, sets or [], data_dir, None, mlflow_uri)
    use_data_dir(cfg.data.data_dir)
    check(cfg, fers, chosen)
    target = torch.device(device_or_error(device))
    for name in sorted(zeroshot_datasets(fers, au)):  # every input readable before any work
        verify_shards(cfg.data.shard_dir, name)
    reproduction = new_reproduction_id()
    per = steps(cfg, fers, au, chosen, len(numbers or [cfg.seed]))
    with Progress(
        TextColumn("[bold]zero-shot training"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        bar = progress.add_task("zero-shot", total=per)
        results = run_zeroshot(
            cfg, fers, au, seen or None, chosen, numbers,
            lambda _s, _p: progress.advance(bar), target,
        )  # fmt: skip
    out = cfg.data.data_dir / "reports" / f"zeroshot-{reproduction}"
    md = record_zeroshot(run_book(cfg, reproduction), results, out)
    console.print(Markdown(md.read_text()))
    console.print(f"{md}")
    show_mlflow(
        console, tracking_uri(cfg), cfg.tracking.experiment_prefix, spool_dir(cfg.data.data_dir)
    )


def _seeds(text: str | None) -> list[int] | None:
    """--seeds "0,1,2" as [0, 1, 2]; None when not given."""
    if text is None:
        return None
    from clef_core.common.errors import ClefError

    try:
        return [int(s) for s in text.split(",") if s.strip()] or None
    except ValueError:
        raise ClefError(f"--seeds: expected integers, e.g. 0,1,2; got {text!r}") from None


def register(app: typer.Typer) -> None:
    app.command()(zeroshot)
