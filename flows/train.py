"""Entry-point glue for training: resolve the config, connect Ray and MLflow, run protocol
units with a progress display, print the closing table. `clef pretrain/finetune/evaluate` and
the Prefect flow call these; the logic lives in clef_core."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from clef_core.common.results import UnitResult
from clef_core.common.runtime import default_tracking_uri
from clef_core.method.config import ExperimentConfig
from clef_core.run.unit import run_unit
from clef_core.tracking.runbook import RunBook
from clef_core.tracking.spool import not_logged_message, spool_dir
from clef_core.training.protocol import Unit


def tracking_uri(cfg: ExperimentConfig) -> str:
    """The configured MLflow URI, else $MLFLOW_TRACKING_URI, else the data dir's store."""
    return cfg.tracking.mlflow_uri or default_tracking_uri(cfg.data.data_dir)


def runs_url(server: str, experiment_id: str) -> str:
    """The experiment's page on its training runs. MLflow 3.17's UI opens an experiment in its
    GenAI view (traces: empty here) unless the link asks for the model-training one; the
    `mlflow.experimentKind` tag the RunBook sets does not change that landing page."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def experiment_links(uri: str, prefix: str) -> list[str]:
    """`name: runs_url` of every `<prefix>-*` experiment in the store at `uri`; a SQLite
    store's links are for `mlflow ui` on its default address."""
    from mlflow import MlflowClient

    server = uri if uri.startswith("http") else "http://127.0.0.1:5000"
    found = MlflowClient(uri).search_experiments(filter_string=f"name LIKE '{prefix}-%'")
    return [f"{e.name}: {runs_url(server, e.experiment_id)}" for e in found]


def new_reproduction_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


def run_book(cfg: ExperimentConfig, reproduction: str) -> RunBook:
    spool = spool_dir(cfg.data.data_dir)
    book = RunBook(tracking_uri(cfg), cfg.tracking.experiment_prefix, reproduction, spool)
    book.params = cfg.flat()
    return book


def close_book(book: RunBook, results: list[UnitResult], ok: bool = True) -> str | None:
    """Each parent gets the mean over folds of its stage-2 results, then ends. Returns (and
    logs as a warning) what is not in MLflow yet and how it gets there; None when all is."""
    import logging

    from clef_core.common.results import summarize

    for dataset, run_id in book.parents().items():
        mine = [r for r in results if r.stage == 2 and r.dataset == dataset]
        if mine:
            book.tracker(run_id).log_metrics(summarize(mine), step=0)
    message = not_logged_message(book.close(ok), book.uri, book.spool)
    if message:
        logging.getLogger("clef.tracking").warning(message)
    return message


def sync_tracking(data_dir: Path, uri: str | None = None) -> dict[str, int]:
    """Send what earlier runs spooled (`clef sync-tracking`) to the server each run logged
    to (or `uri`); returns what is still left per run."""
    from clef_core.tracking.spool import flush_spool

    return flush_spool(spool_dir(data_dir), uri)


def run_units_in_order(
    cfg: ExperimentConfig, units: list[Unit], book: RunBook, console: Console
) -> list[UnitResult]:
    """Run units one after another (dependencies first, as `protocol.plan` orders them)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    done: dict[Unit, UnitResult] = {}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("training", total=len(units))
        for unit in units:
            progress.update(bar, description=f"training {unit.name}")
            done[unit] = run_unit(cfg, unit, book, done.get(unit.init) if unit.init else None)
            progress.advance(bar)
    return list(done.values())


def _score(metrics: dict[str, float], key: str, auc: bool = False) -> str:
    value = metrics.get(key)
    if value is None or value != value:  # absent, or NaN (undefined)
        return "-"
    return f"{value:.2f}" if auc else f"{100 * value:.1f}"


def results_table(results: list[UnitResult], title: str) -> Table:
    """One row per unit, narrow enough for an 80-column terminal: the held-out score beside
    the trivial predictor's (every AU present / the majority class) and the ROC-AUC."""
    table = Table(title=title)
    for col in ("unit", "result", "trivial", "AUC", "loss", "time"):
        table.add_column(col, justify="left" if col in ("unit", "result") else "right")
    for r in results:
        m = r.metrics
        if "f1_mean" in m:
            row = [f"F1 {_score(m, 'f1_mean')}", _score(m, "f1_baseline_mean")]
            row.append(_score(m, "auc_mean", auc=True))
        elif "accuracy" in m:
            row = [f"acc {_score(m, 'accuracy')}", _score(m, "accuracy_baseline")]
            row.append(_score(m, "auc_macro", auc=True))
        else:
            row = ["-", "", ""]
        loss = m.get("train_loss")
        table.add_row(
            r.unit,
            *row,
            f"{loss:.3f}" if loss is not None else "-",
            "cached" if r.cached else f"{r.seconds:.0f} s",
        )
    table.caption = (
        "trivial: F1 of predicting every AU present, or the accuracy of the training split's "
        "majority class; AUC: held-out ROC-AUC (0.50 = chance)"
    )
    return table


def au_metrics_table(metrics: dict[str, float], au_ids: list[int], title: str) -> Table:
    """A unit's held-out AU metrics with the AUs as rows (fits 80 columns)."""
    table = Table(title=title)
    for col in ("AU", "F1", "always present", "AUC"):
        table.add_column(col, justify="left" if col == "AU" else "right")
    for a in au_ids:
        table.add_row(
            f"AU{a}",
            _score(metrics, f"f1_au{a}"),
            _score(metrics, f"f1_baseline_au{a}"),
            _score(metrics, f"auc_au{a}", auc=True),
        )
    table.add_row(
        "mean",
        _score(metrics, "f1_mean"),
        _score(metrics, "f1_baseline_mean"),
        _score(metrics, "auc_mean", auc=True),
        style="bold",
    )
    return table


def show_mlflow(console: Console, uri: str, prefix: str, spool: Path | None = None) -> None:
    """Where to browse the runs: the `mlflow ui` line for a SQLite store, each experiment's
    link. A server that does not answer by now (training is done: its checkpoints and results
    are written) is one warning line, then what `spool` still holds and how it gets there."""
    from mlflow.exceptions import MlflowException

    from clef_core.tracking.spool import pending, quick_http

    if not uri.startswith("http"):
        console.print(f"browse the runs: mlflow ui --backend-store-uri {uri} --host 127.0.0.1")
    quick_http()  # one retry, not MLflow's minutes of them
    try:
        links = experiment_links(uri, prefix)
    except (MlflowException, OSError) as err:
        why = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        console.print(
            f"warning: MLflow at {uri} did not answer ({why}); no links to the runs",
            soft_wrap=True, highlight=False, markup=False,
        )  # fmt: skip
        if spool is not None:
            left = not_logged_message(pending(spool), uri, spool)
            console.print(left or f"nothing is left to send in {spool}: every tracking call "
                          "of the run reached MLflow", soft_wrap=True, highlight=False)  # fmt: skip
        return
    for line in links:
        console.print(f"  {line}", soft_wrap=True, highlight=False)
