"""`clef pretrain / finetune / evaluate / reproduce / report`: thin commands over flows.train,
the Prefect flow and clef_core. Each ends with a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flows.console import print_table, quiet_libraries

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

    from clef_core.common.runtime import init_ray
    from clef_core.training.cache import verify_shards
    from clef_core.training.experiment import key_of
    from clef_core.training.protocol import datasets_of
    from flows.train import (
        close_book,
        new_reproduction_id,
        resolve_config,
        results_table,
        run_book,
        run_units_in_order,
    )

    cfg = resolve_config(preset, sets or [], data_dir, ray_address, mlflow_uri)
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
    _show_mlflow(book.uri, cfg.tracking.experiment_prefix)


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
    from rich.table import Table

    from clef_core.common.errors import ClefError
    from clef_core.common.runtime import init_ray
    from clef_core.method.checkpoint import label_space_of, read_meta
    from clef_core.training.evaluate import device_or_error, evaluate_checkpoint
    from clef_core.training.experiment import cached_result, evaluation_artifacts
    from clef_core.training.heldout import FILE as PREDICTIONS
    from clef_core.training.heldout import read_predictions, write_held_out
    from clef_core.training.protocol import stage2_unit
    from flows.train import au_metrics_table, resolve_config

    cfg = resolve_config(preset, sets or [], data_dir, ray_address)
    quiet_libraries(cfg.data.data_dir / "logs" / "clef.log", prefect=False)
    unit = stage2_unit(dataset, fold, cfg.stage1.epochs > 0)
    if checkpoint is None:
        done = cached_result(cfg, unit)
        if done is None:
            raise ClefError(
                f"{unit.name} has not been trained with this config: run `clef finetune` first or pass --checkpoint"
            )
        checkpoint = Path(done.checkpoint)
    started = init_ray(cfg.compute.ray_address)
    try:
        pred, metrics = evaluate_checkpoint(
            cfg, checkpoint, dataset, unit.test_parts, device_or_error(device)
        )
    finally:
        if started:
            ray.shutdown()
    space = label_space_of(read_meta(checkpoint))
    assert space is not None
    out = out or cfg.data.data_dir / "evaluations" / unit.name
    arrays = {"scores": pred.scores, "targets": pred.targets, "features": pred.features}
    paths = evaluation_artifacts(arrays, space, out, unit.name, cfg.stage2.threshold)
    title = f"{dataset} fold {fold}: {len(pred.targets)} held-out frames"
    table_path = out / PREDICTIONS  # with the majority class: the FER baseline needs it
    metrics = write_held_out(
        pred, space, table_path, cfg.data.shard_dir, dataset, unit.train_parts,
        unit.test_parts, cfg.stage2.threshold,
    )  # fmt: skip
    if space.kind == "au":
        print_table(console, au_metrics_table(metrics, list(space.labels), title))
    else:
        majority = read_predictions(table_path)[2]["majority_class"]
        table = Table(title=title)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in metrics.items():
            table.add_row(k, f"{v:.2f}" if k.startswith("auc") else f"{100 * v:.1f}")
        table.caption = (
            f"accuracy_baseline: always {space.labels[majority]!r}, the training majority"
        )
        print_table(console, table)
    console.print("plots: " + ", ".join(str(p) for p in paths))
    console.print(f"predictions: {table_path}")


def reproduce(
    preset: Preset = "cpu-tiny",
    datasets: Annotated[
        list[str] | None,
        typer.Option("--dataset", help="Protocol to run (repeatable); default: the preset's."),
    ] = None,
    folds: Annotated[
        list[int] | None, typer.Option("--fold", help="Fold number (repeatable).")
    ] = None,
    ablations: Annotated[
        list[str] | None,
        typer.Option(
            "--ablation",
            help="Table 6 row besides the full method (repeatable), or 'all': CLIP-I, "
            "CLIP-I+N, CLIP-I+N+D, FaRL-I, FaRL-I+N, FaRL-I+N+D, PI, PA+PI, PI+N, PA+PI+N, "
            "PI+N+D; ours: SSL, SSL+N+D (stage 1 with instance pairing).",
        ),
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(
            "--weights",
            help="Initial weights: clip=PATH (Table 6's CLIP rows) and farl=PATH (the rest; "
            "default: model.init_weights). None given: from scratch (repeatable).",
        ),
    ] = None,
    zeroshot: Annotated[
        bool,
        typer.Option(help="Also run the zero-shot experiments (bp4d, bp4d_plus, rafdb, ferplus)."),
    ] = False,
    probes: Annotated[
        bool,
        typer.Option(help="Also probe each fold's stage-1 features against a random init."),
    ] = False,
    roots: Annotated[
        list[str] | None,
        typer.Option("--root", help="Real data: NAME=PATH (repeatable); others are synthetic."),
    ] = None,
    synthetic: Annotated[
        bool, typer.Option(help="Use the embedded synthetic data for datasets without --root.")
    ] = True,
    sets: Sets = None,
    data_dir: Annotated[
        Path, typer.Option(help="Data dir (shards, runs, reports, MLflow store).")
    ] = Path("data"),
    ray_address: RayAddress = None,
    mlflow_uri: MlflowUri = None,
) -> None:
    """Run the whole `clef` Prefect flow in this process (no server needed), print the report."""
    from flows.clef_flow import ReproductionParams, checked, clef

    def pairs(items: list[str] | None, option: str) -> dict[str, Path]:
        parsed = {}
        for item in items or []:
            name, sep, path = item.partition("=")
            if not sep:
                raise typer.BadParameter(f"expected {option} NAME=PATH, got {item!r}")
            parsed[name] = Path(path)
        return parsed

    params = ReproductionParams(
        preset=preset, overrides=sets or [], datasets=datasets or None, folds=folds or None,
        ablations=ablations or [], weights=pairs(weights, "--weights"), zeroshot=zeroshot,
        probes=probes, synthetic=synthetic,
        roots=pairs(roots, "--root"), data_dir=data_dir,
        ray_address=ray_address, mlflow_uri=mlflow_uri,
    )  # fmt: skip
    checked(params)  # a bad parameter fails here, in seconds, before Prefect and Ray start
    log = quiet_libraries(data_dir.resolve() / "logs" / "clef.log")
    _start_temporary_prefect()
    state = clef(**params.model_dump(), return_state=True)
    if not state.is_completed():  # the flow's state message is the cause, in one line
        from clef_core.common.errors import ClefError

        raise ClefError(f"the clef flow ended {state.name}: {state.message}")
    _show_report(Path(state.result()))
    typer.echo(f"Prefect's and Ray's own log lines: {log}")


def _start_temporary_prefect() -> None:
    """Start this process's temporary Prefect server (no PREFECT_API_URL) one process at a
    time per Prefect home. Two `clef reproduce` on one data dir share its Prefect database,
    and each temporary server migrates it as it starts: two at once on a new database
    collided (`duplicate column name`, `NoSuchTableError: block`), and the loser's traceback
    was printed before Prefect started it again. Under an flock on the home the second finds
    the database migrated (ours). The flow then uses this server (Prefect keeps one per
    process)."""
    import fcntl
    import os

    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    if PREFECT_API_URL.value():  # a real server: nothing to start
        return
    # The server's process takes this environment (`use_data_dir` set the home after
    # Prefect read its settings, so the environment is what it gets).
    home = Path(os.environ.get("PREFECT_HOME") or PREFECT_HOME.value())
    home.mkdir(parents=True, exist_ok=True)
    with (home / "temporary-server.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when closed (or the process dies)
        SubprocessASGIServer().start()


def _show_report(path: Path) -> None:
    from rich.markdown import Markdown

    from flows.train import resolve_config, tracking_uri

    console.print(Markdown(path.read_text()))
    uri = tracking_uri(resolve_config("default", [], path.parents[2]))
    console.print(f"report: {path} and {path.with_suffix('.html')}")
    _show_mlflow(uri, resolve_config("default", [], path.parents[2]).tracking.experiment_prefix)


def _show_mlflow(uri: str, prefix: str) -> None:
    from flows.train import experiment_links

    if not uri.startswith("http"):
        console.print(f"browse the runs: mlflow ui --backend-store-uri {uri} --host 127.0.0.1")
    for line in experiment_links(uri, prefix):
        console.print(f"  {line}", soft_wrap=True, highlight=False)


def report(
    data_dir: Annotated[Path, typer.Option(help="Data dir of the reproduction.")] = Path("data"),
    reproduction: Annotated[
        str | None, typer.Option(help="Reproduction id; default: the latest.")
    ] = None,
) -> None:
    """Re-render and print the results tables of a reproduction (markdown + HTML)."""
    from clef_core.tracking.report import latest_report, rewrite

    _show_report(rewrite(latest_report(data_dir.resolve() / "reports", reproduction)))


def register(app: typer.Typer) -> None:
    for command in (pretrain, finetune, evaluate, reproduce, report):
        app.command()(command)
