"""`clef pretrain / finetune / evaluate / reproduce / report`: thin commands over flows.train,
the Prefect flow and clef_core. Each ends with a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from flows.console import print_table, quiet_libraries

if TYPE_CHECKING:
    from clef_core.method.config import ExperimentConfig
    from clef_core.run.evaluate import Evaluation
    from clef_core.training.protocol import Unit

console = Console()

Preset = Annotated[str, typer.Option(help="Config preset: default, paper, cpu-tiny.")]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value, e.g. --set stage1.epochs=1 (repeatable)."),
]
DataDir = Annotated[
    Path | None, typer.Option(help="Data dir (shards, runs, MLflow store); default ./data.")
]
RayAddress = Annotated[
    str | None, typer.Option(help="Ray cluster address; default: a local Ray instance.")
]
MlflowUri = Annotated[
    str | None, typer.Option(help="MLflow tracking URI; default: SQLite in the data dir.")
]
Fold = Annotated[str, typer.Option(help="Fold number (from 1), or 'all'.")]


def _folds(text: str) -> list[int] | None:
    if text == "all":
        return None
    try:
        return [int(text)]
    except ValueError:
        raise typer.BadParameter(f"expected a fold number or 'all', got {text!r}") from None


def _train(units_of, preset, sets, data_dir, ray_address, mlflow_uri, title: str) -> None:  # type: ignore[no-untyped-def]
    import ray

    from clef_core.common.runtime import init_ray, use_data_dir
    from clef_core.run.reproduction import resolve_config
    from clef_core.training.cache import verify_shards
    from clef_core.training.protocol import datasets_of
    from clef_core.training.unit_cache import key_of
    from flows.train import (
        close_book,
        new_reproduction_id,
        results_table,
        run_book,
        run_units_in_order,
        show_mlflow,
    )

    cfg = resolve_config(preset, sets or [], data_dir, ray_address, mlflow_uri)
    use_data_dir(cfg.data.data_dir)
    quiet_libraries(cfg.data.data_dir / "logs" / "clef.log", prefect=False)
    units = units_of(cfg)
    for unit in units:  # every input there (shards of each dataset) before Ray starts
        key_of(cfg, unit)
    for dataset in datasets_of(units):  # and readable, before any work (footers: seconds)
        verify_shards(cfg.data.shard_dir, dataset)
    book = run_book(cfg, new_reproduction_id())
    started = init_ray(cfg.compute.ray_address)
    results: list = []
    try:
        results = run_units_in_order(cfg, units, book, console)
    finally:
        close_book(book, results, ok=len(results) == len(units))
        if started:
            ray.shutdown()
    print_table(console, results_table(results, title))
    for r in results:  # paths wrap rather than being cut, so outside the table
        console.print(f"{r.unit}: {Path(r.checkpoint).parent}", soft_wrap=True)
    show_mlflow(console, book.uri, cfg.tracking.experiment_prefix, book.spool)


def pretrain(
    dataset: Annotated[str, typer.Option(help="Stage-1 source: bp4d or bp4d_plus.")],
    fold: Annotated[
        str, typer.Option(help="Fold (from 1), 'all' folds, or 'none' = every part (FER init).")
    ] = "all",
    preset: Preset = "default",
    sets: Sets = None,
    data_dir: DataDir = None,
    ray_address: RayAddress = None,
    mlflow_uri: MlflowUri = None,
) -> None:
    """Stage 1: activity-supervised contrastive pre-training on the fold's training parts."""
    from clef_core.common.datasets import with_activities
    from clef_core.common.errors import ClefError
    from clef_core.training.protocol import Unit, folds_of

    if dataset not in with_activities():
        raise ClefError(
            f"stage 1 pre-trains on {' or '.join(with_activities())} (activity labels), "
            f"got {dataset!r}"
        )

    def units(cfg):  # type: ignore[no-untyped-def]
        if fold == "none":
            return [Unit(1, dataset, None)]
        return [Unit(1, dataset, k) for k in folds_of(dataset, _folds(fold))]

    _train(units, preset, sets, data_dir, ray_address, mlflow_uri, f"stage 1 on {dataset}")


def finetune(
    dataset: Annotated[
        str, typer.Option(help="bp4d, bp4d_plus, disfa, rafdb, affectnet7/8, ferplus.")
    ],
    fold: Fold = "all",
    preset: Preset = "default",
    sets: Sets = None,
    data_dir: DataDir = None,
    ray_address: RayAddress = None,
    mlflow_uri: MlflowUri = None,
) -> None:
    """Stage 2 on a dataset's fold(s), with the stage-1 (or BP4D) models it starts from."""
    from clef_core.common.errors import ClefError
    from clef_core.method.config import DATASETS
    from clef_core.training.protocol import plan

    if dataset not in DATASETS:
        raise ClefError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")

    def units(cfg):  # type: ignore[no-untyped-def]
        proto = cfg.protocol.model_copy(update={"datasets": [dataset], "folds": _folds(fold)})
        return plan(cfg.model_copy(update={"protocol": proto}))

    _train(units, preset, sets, data_dir, ray_address, mlflow_uri, f"stage 2 on {dataset}")


def evaluate(
    dataset: Annotated[str, typer.Option(help="Dataset whose shards to evaluate on.")],
    fold: Annotated[int, typer.Option(help="Fold number (its held-out part is scored).")] = 1,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Checkpoint folder; default: this config's trained unit of the fold."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Where the plots go.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    preset: Preset = "default",
    sets: Sets = None,
    data_dir: DataDir = None,
    ray_address: RayAddress = None,
) -> None:
    """Score a stage-2 checkpoint on a fold's held-out part: metrics table, plots, predictions.parquet."""
    import ray

    from clef_core.common.runtime import init_ray, use_data_dir
    from clef_core.run.evaluate import evaluate as score
    from clef_core.run.reproduction import resolve_config
    from clef_core.training.evaluate import device_or_error

    cfg = resolve_config(preset, sets or [], data_dir, ray_address)
    use_data_dir(cfg.data.data_dir)
    quiet_libraries(cfg.data.data_dir / "logs" / "clef.log", prefect=False)
    unit, checkpoint = _unit_and_checkpoint(cfg, dataset, fold, checkpoint)
    out = out or cfg.data.data_dir / "evaluations" / unit.name
    # Ray Data decodes the shards unless the config scores from the decoded cache in-process.
    started = not cfg.compute.cache_decoded and init_ray(cfg.compute.ray_address)
    try:
        scored = score(cfg, checkpoint, unit, out, device=device_or_error(device))
    finally:
        if started:
            ray.shutdown()
    paths = scored.plot(out)
    _print_evaluation(scored, f"{dataset} fold {fold}: {scored.frames} held-out frames")
    console.print("plots: " + ", ".join(str(p) for p in paths))
    console.print(f"predictions: {scored.table}")


def _unit_and_checkpoint(
    cfg: ExperimentConfig, dataset: str, fold: int, checkpoint: Path | None
) -> tuple[Unit, Path]:
    """The fold's stage-2 unit, and the checkpoint to score: the one given, else the unit's
    trained with this config (one clear error when there is none)."""
    from clef_core.common.errors import ClefError
    from clef_core.training.protocol import stage2_unit
    from clef_core.training.unit_cache import cached_result

    unit = stage2_unit(dataset, fold, cfg.stage1.epochs > 0)
    if checkpoint is None:
        done = cached_result(cfg, unit)
        if done is None:
            raise ClefError(
                f"{unit.name} has not been trained with this config: run `clef finetune` first or pass --checkpoint"
            )
        checkpoint = Path(done.checkpoint)
    return unit, checkpoint


def _print_evaluation(scored: Evaluation, title: str) -> None:
    """The AU metrics with the AUs as rows, or the FER metrics beside the majority class."""
    from rich.table import Table

    from clef_core.training.heldout import read_predictions
    from flows.train import au_metrics_table

    space, metrics = scored.space, scored.metrics
    if space.kind == "au":
        print_table(console, au_metrics_table(metrics, list(space.labels), title))
        return
    majority = read_predictions(scored.table)[2]["majority_class"]  # the FER baseline's
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.2f}" if k.startswith("auc") else f"{100 * v:.1f}")
    table.caption = f"accuracy_baseline: always {space.labels[majority]!r}, the training majority"
    print_table(console, table)


def register(app: typer.Typer) -> None:
    for command in (pretrain, finetune, evaluate):
        app.command()(command)
