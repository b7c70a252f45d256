"""`clef reproduce` (the whole `clef` Prefect flow in this process, no server needed) and
`clef report` (a reproduction's tables again)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli_train import MlflowUri, Preset, RayAddress, Sets, console
from flows.console import quiet_libraries

Datasets = Annotated[
    list[str] | None,
    typer.Option("--dataset", help="Protocol to run (repeatable); default: the preset's."),
]
Folds = Annotated[list[int] | None, typer.Option("--fold", help="Fold number (repeatable).")]
Ablations = Annotated[
    list[str] | None,
    typer.Option(
        "--ablation",
        help="Table 6 row besides the full method (repeatable), or 'all': CLIP-I, "
        "CLIP-I+N, CLIP-I+N+D, FaRL-I, FaRL-I+N, FaRL-I+N+D, PI, PA+PI, PI+N, PA+PI+N, "
        "PI+N+D; ours: SSL, SSL+N+D (stage 1 with instance pairing).",
    ),
]
Weights = Annotated[
    list[str] | None,
    typer.Option(
        "--weights",
        help="Initial weights (repeatable): clip=... (Table 6's CLIP rows) and farl=... (the "
        "rest; default: model.init_weights), each a file, a URL, an open_clip pretrained tag "
        "(openai, laion2b_s34b_b88k), hf-hub:ORG/NAME, or farl-base-ep16 / farl-base-ep64: "
        "fetched once into $CLEF_CACHE and checked. None given: from scratch.",
    ),
]
Zeroshot = Annotated[
    bool, typer.Option(help="Also run the zero-shot experiments (bp4d, bp4d_plus, rafdb, ferplus).")
]
Probes = Annotated[
    bool, typer.Option(help="Also probe each fold's stage-1 features against a random init.")
]
Roots = Annotated[
    list[str] | None,
    typer.Option("--root", help="Real data: NAME=PATH (repeatable); others are synthetic."),
]
Synthetic = Annotated[
    bool, typer.Option(help="Use the embedded synthetic data for datasets without --root.")
]
ReproDataDir = Annotated[Path, typer.Option(help="Data dir (shards, runs, reports, MLflow store).")]


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    """`NAME=VALUE` items (--weights, --root) as a dict; a malformed one is a usage error.
    Text, not paths: a --weights URL keeps its '//'."""
    parsed = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected {option} NAME=VALUE, got {item!r}")
        parsed[name] = value
    return parsed


def reproduce(
    preset: Preset = "cpu-tiny",
    datasets: Datasets = None,
    folds: Folds = None,
    ablations: Ablations = None,
    weights: Weights = None,
    zeroshot: Zeroshot = False,
    probes: Probes = False,
    roots: Roots = None,
    synthetic: Synthetic = True,
    sets: Sets = None,
    data_dir: ReproDataDir = Path("data"),
    ray_address: RayAddress = None,
    mlflow_uri: MlflowUri = None,
) -> None:
    """Run the whole `clef` Prefect flow in this process (no server needed), print the report."""
    from clef_core.common.runtime import use_data_dir
    from clef_core.run.reproduction import ReproductionParams, plan_reproduction
    from flows.clef_flow import clef
    from flows.prefect_compat import start_temporary_server

    params = ReproductionParams(
        preset=preset, overrides=sets or [], datasets=datasets or None, folds=folds or None,
        ablations=ablations or [], weights=_pairs(weights, "--weights"), zeroshot=zeroshot,
        probes=probes, synthetic=synthetic,
        roots=_pairs(roots, "--root"), data_dir=data_dir,
        ray_address=ray_address, mlflow_uri=mlflow_uri,
    )  # fmt: skip
    planned = plan_reproduction(params)  # a bad parameter fails here, before Prefect and Ray
    root = use_data_dir(planned.main.data.data_dir)  # Prefect's home: the temporary server's
    log = quiet_libraries(root / "logs" / "clef.log")
    start_temporary_server()
    state = clef(**params.model_dump(), return_state=True)
    if not state.is_completed():  # the flow's state message is the cause, in one line
        from clef_core.common.errors import ClefError

        raise ClefError(f"the clef flow ended {state.name}: {state.message}")
    _show_report(Path(state.result()))
    typer.echo(f"Prefect's and Ray's own log lines: {log}")


def _show_report(path: Path) -> None:
    from rich.markdown import Markdown

    from clef_core.run.reproduction import resolve_config
    from clef_core.tracking.spool import spool_dir
    from flows.train import show_mlflow, tracking_uri

    console.print(Markdown(path.read_text()))
    cfg = resolve_config("default", [], path.parents[2])
    console.print(f"report: {path} and {path.with_suffix('.html')}")
    show_mlflow(
        console, tracking_uri(cfg), cfg.tracking.experiment_prefix, spool_dir(cfg.data.data_dir)
    )


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
    for command in (reproduce, report):
        app.command()(command)
