"""The `clef` Prefect flow: preprocess -> stage 1 -> stage 2 per dataset and fold -> evaluation
-> report, as a DAG of tasks. Thin: every task calls a library function. The evaluation step
scores each finished stage-2 checkpoint afresh on its fold's held-out part (a task of its own,
so it reruns on a cached unit without retraining); the report shows its metrics.

Parameters are checked before any work starts (preset, overrides, datasets, folds, roots), so
a bad one fails the run in seconds with one message. When a task fails, the tasks that depend
on it are marked Cancelled (they would otherwise stay Pending/NotReady), and the run ends
Failed with the failing task's own message as its state message: what `prefect deployment
run --watch`, the UI and `clef reproduce` show.

Independent branches run concurrently (a thread pool); training units share the Ray
instance, at most `compute.concurrent_units` at a time. Each unit's result is cached by its
key (the shards' manifest hash + the resolved config, `clef_core.training.protocol.unit_key`), so a
rerun after a failure redoes only what failed and a rerun with nothing changed finishes at
once; the same cache serves `clef finetune` and `clef reproduce`. Retries only on I/O
(preprocessing, synthetic data) and Ray connection errors.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, wait
from prefect.states import Cancelled, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field, ValidationError

from clef_core.common.errors import ClefError
from clef_core.common.runtime import configure_process
from clef_core.common.storage import location, upload_shards
from clef_core.method.config import (
    DATASETS,
    ExperimentConfig,
    ablation_init_weights,
    ablation_names,
    ablation_overrides,
)
from clef_core.tracking.report import MAIN
from clef_core.tracking.runbook import RunBook
from clef_core.training.experiment import UnitResult, run_unit
from clef_core.training.protocol import Unit, datasets_of, plan, zeroshot_datasets


class ReproductionParams(BaseModel):
    """What to reproduce: the flow's parameters, one Prefect parameter each (the UI renders
    them as a form; a run's `--param NAME=...` replaces that one and keeps the deployment's
    others)."""

    preset: str = "cpu-tiny"  # config preset: cpu-tiny (2 CPU cores), paper (GPUs), default
    overrides: list[str] = []  # config overrides, e.g. ["stage1.epochs=1"]
    datasets: list[str] | None = None  # protocols to run; None = the preset's protocol.datasets
    folds: list[int] | None = None  # fold numbers from 1; None = the preset's protocol.folds
    # Table 6 rows besides the full method (PA+PI+N+D), by name (CLIP-I ... FaRL-I+N+D, PI,
    # PA+PI, PI+N, PA+PI+N, PI+N+D; ours: SSL, SSL+N+D, stage 1 with instance pairing) or
    # "all"; `clef_core.method.config.ABLATIONS`.
    ablations: list[str] = []
    # Initial weights files by source, "clip" and "farl": the CLIP rows start from "clip", the
    # others from "farl" (else model.init_weights); a row without one trains from scratch.
    weights: dict[str, Path] = {}
    # The zero-shot experiments too (clef_core.training.zeroshot: unseen RAF-DB and FERPlus
    # expressions; BP4D AUs -> their expressions; rows CLEF and FaRL), with the full method's
    # config and its seed; their table goes in the report.
    zeroshot: bool = False
    # Linear probes of each fold's stage-1 image features against a random initialisation
    # (clef_core.training.probe: AUs, activity, identity); their table goes in the report.
    probes: bool = False
    synthetic: bool = True  # use the embedded synthetic data (generated once if absent)
    roots: dict[str, Path] = {}  # real dataset roots by name; win over the synthetic ones
    data_dir: Path | None = (
        None  # shards, runs, reports, MLflow store; None = $CLEF_DATA_DIR or ./data
    )
    ray_address: str | None = None  # None = a local Ray instance
    mlflow_uri: str | None = None  # None = SQLite in the data dir
    synthetic_preset: str = Field("demo", pattern="^(test|demo)$")  # size of generated data


def _is_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what a second try can fix: I/O and cluster connection errors."""
    try:
        state.result()
    except (OSError, ConnectionError, TimeoutError):
        return True
    except Exception as err:
        return type(err).__name__ in ("RaySystemError", "GetTimeoutError")
    return False


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=_is_io_error)
def synthetic_data(out: Path, preset: str) -> Path:
    """Generate the embedded synthetic datasets unless they are already there."""
    from synthetic.generate import generate
    from synthetic.spec import make_spec

    if not (out / "synth.json").exists():
        generate(make_spec(out, preset), show_progress=False)
    return out


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=_is_io_error)
def preprocess(
    dataset: str, root: Path, shard_dir: str | Path, image_size: int, staging: Path
) -> dict[str, Any]:
    """Aligned-face shards of one dataset (finished shards are skipped). Shards at a URI are
    written in `staging` (this machine's <data_dir>/shards) and then copied there, the
    manifest last (ours: preprocessing itself writes local files, README "Orchestration")."""
    from preprocessing.distributed import run_sequences
    from preprocessing.pipeline import PreprocessOptions, finish
    from preprocessing.pipeline import plan as plan_sequences

    target = location(shard_dir)
    opts = PreprocessOptions(dataset, root, target.local or staging, image_size)
    sequences, issues = plan_sequences(opts)
    manifest = finish(opts, run_sequences(opts, sequences, show_progress=False), issues)
    if target.local is None:
        upload_shards(staging / dataset, target / dataset)
    get_run_logger().info(
        "%s: %d frames, %d without a face", dataset, manifest.rows, manifest.no_face
    )
    return manifest.model_dump(include={"dataset", "rows", "no_face", "input_hash"})


_FITS: dict[int, threading.Semaphore] = {}


@task(retries=1, retry_delay_seconds=10, retry_condition_fn=_is_io_error, cache_policy=NO_CACHE)
def train_unit(
    cfg: ExperimentConfig, unit: Unit, book: RunBook, init: UnitResult | None
) -> UnitResult:
    """Train (or reuse the cached result of) one stage on one dataset fold."""
    gate = _FITS.setdefault(
        cfg.compute.concurrent_units, threading.Semaphore(cfg.compute.concurrent_units)
    )
    with gate:
        result = run_unit(cfg, unit, book, init)
    get_run_logger().info("%s: %s%s", unit.name, headline(result.metrics),
                          " (cached)" if result.cached else "")  # fmt: skip
    return result


# The figures a unit's log line shows; every metric is in MLflow and the unit's result.json.
_HEADLINE = ("f1_mean", "f1_baseline_mean", "auc_mean", "accuracy", "accuracy_baseline",
             "train_loss")  # fmt: skip


def headline(metrics: dict[str, float]) -> str:
    """One short line of a unit's main figures, not its hundred per-AU metrics."""
    shown = [f"{k} {metrics[k]:.4g}" for k in _HEADLINE if k in metrics]
    return ", ".join(shown) or f"{len(metrics)} metrics"


_EVALUATING: dict[str, threading.Lock] = {}


@task(cache_policy=NO_CACHE)
def evaluate(cfg: ExperimentConfig, unit: Unit, trained: UnitResult, book: RunBook) -> UnitResult:
    """The evaluation step: score a finished stage-2 unit's checkpoint afresh on its test part
    (held-out subjects), write `<unit folder>/evaluation/` (metrics.json, predictions.parquet)
    and log the metrics as an MLflow run of their own; the unit's result with these metrics.

    Re-runnable on a finished checkpoint: a cached unit is evaluated again, not retrained
    (an evaluation already written for it is reused; delete the folder to score it anew).
    The training loop scores the same part at its end; the two must agree (logged)."""
    import json
    from dataclasses import replace

    from clef_core.training.evaluate import EVALUATION, evaluate_unit

    out = Path(trained.checkpoint).parent / EVALUATION
    done = out / "metrics.json"
    # Rows of the same training (a CLIP row and its FaRL row from scratch) share a folder.
    with _EVALUATING.setdefault(str(out), threading.Lock()):
        if done.is_file():
            metrics = json.loads(done.read_text())
        else:
            metrics = evaluate_unit(
                cfg, Path(trained.checkpoint), unit.dataset, unit.train_parts, unit.test_parts,
                out,
            )  # fmt: skip
    key = "f1_mean" if "f1_mean" in metrics else "accuracy"
    get_run_logger().info(
        "%s evaluated: %s %.4f (the training loop's: %.4f)",
        unit.name, key, metrics[key], trained.metrics.get(key, float("nan")),
    )  # fmt: skip
    # Nested under the training run it scores (not beside the units under the parent run:
    # a parent's children stay its units), in the reproduction that evaluated it.
    tags = {
        "clef.evaluation_of": unit.name, "clef.step": "evaluation", "clef.key": trained.key,
        "clef.reproduction": book.reproduction,
        "mlflow.parentRunId": trained.run_id or book.parent(unit.dataset),
    }  # fmt: skip
    run = book.client.create_run(
        book.experiment_id(unit.dataset), run_name=f"{unit.name}-evaluation", tags=tags
    )
    run_id = str(run.info.run_id)
    book.tracker(run_id).log_metrics(metrics, step=0)
    book.tracker(run_id).log_artifact(out, "evaluation")
    book.finish(run_id)
    return replace(trained, metrics={**trained.metrics, **metrics})


def record_zeroshot(book: RunBook, results: list[Any], out: Path) -> Path:
    """`out/zeroshot.md` (the table), `out/zeroshot.json` (the results, to merge runs) and one
    MLflow run per zero-shot result (experiment, dataset, row, seed; experiment
    `<prefix>-zeroshot`, under the reproduction's parent run there)."""
    import json

    from clef_core.tracking.zeroshot_report import zeroshot_table

    out.mkdir(parents=True, exist_ok=True)
    md = out / "zeroshot.md"
    dicts = [r.as_dict() for r in results]
    md.write_text("\n".join(zeroshot_table(dicts)) + "\n")
    (out / "zeroshot.json").write_text(json.dumps(dicts, indent=1))
    for r in results:
        name = f"{r.experiment} | {r.dataset} | {r.row} | seed {r.seed}"
        tags = {"clef.zeroshot": r.experiment, "clef.dataset": r.dataset, "clef.row": r.row}
        run_id = book.child("zeroshot", name, tags)
        tracker = book.tracker(run_id)
        params = ("dataset", "row", "seed", "trained_on", "tested_on", "start")
        tracker.log_params({k: str(getattr(r, k)) for k in params})
        numbers = {k: float(v) for k, v in r.as_dict().items()
                   if isinstance(v, float | int) and k != "seed" and v == v}  # fmt: skip
        tracker.log_metrics(numbers, step=0)  # NaN (an undefined AUC) left out
        tracker.log_artifact(md)
        book.finish(run_id)
    book.close()
    return md


@task(cache_policy=NO_CACHE)
def zeroshot(cfg: ExperimentConfig, book: RunBook, out: Path) -> list[dict[str, Any]]:
    """The zero-shot experiments on the driver (`clef_core.training.zeroshot`), recorded in MLflow."""
    from clef_core.training.zeroshot import run_zeroshot

    results = run_zeroshot(cfg)
    record_zeroshot(book, results, out)
    for r in results:
        get_run_logger().info("zero-shot %s, %s, %s: accuracy %.3f unseen, %.3f all",
                              r.experiment, r.dataset, r.row, r.accuracy_unseen, r.accuracy_all)  # fmt: skip
    return [r.as_dict() for r in results]


@task(cache_policy=NO_CACHE)
def write_report(
    runs: dict[str, list[UnitResult]], books: dict[str, RunBook], params: ReproductionParams,
    out: Path, zeroshot: list[dict[str, Any]] | None = None,
    probed: list[dict[str, Any]] | None = None,
) -> Path:  # fmt: skip
    """The results tables beside the paper's, as markdown + HTML, logged to every parent run."""
    from clef_core.tracking.report import write_report as write
    from flows.train import close_book

    path = write(runs, out, params.synthetic and not params.roots, zeroshot, probed)
    for name, book in books.items():
        for run_id in book.parents().values():
            book.tracker(run_id).log_artifact(path.parent, "report")
        close_book(book, runs[name])
    return path


def configs(params: ReproductionParams) -> dict[str, ExperimentConfig]:
    """The full method's config, and one per ablation row asked for."""
    from clef_core.common.runtime import default_data_dir
    from flows.train import resolve_config

    extra = list(params.overrides)
    if params.datasets is not None:
        extra.append(f"protocol.datasets={params.datasets}")
    if params.folds is not None:
        extra.append(f"protocol.folds={params.folds}")
    unknown = sorted(set(params.weights) - {"clip", "farl"})
    if unknown:
        raise ClefError(f"weights: unknown source {', '.join(unknown)}; known: clip, farl")
    for source, path in sorted(params.weights.items()):
        if not Path(path).is_file():
            raise ClefError(f"weights: the {source} weights file {path} does not exist")
    if "farl" in params.weights:  # as the config's own: the paper preset then does not warn
        extra.append(f"model.init_weights={params.weights['farl']}")
    out = {}
    for name in [MAIN, *(n for n in ablation_names(params.ablations) if n != MAIN)]:
        sets = [*ablation_overrides(name), *extra]
        cfg = resolve_config(
            params.preset, sets, params.data_dir or default_data_dir(), params.ray_address,
            params.mlflow_uri,
        )  # fmt: skip
        init = ablation_init_weights(name, cfg.model.init_weights, params.weights)
        out[name] = cfg.model_copy(
            update={"model": cfg.model.model_copy(update={"init_weights": init})}
        )
    return out


def check_roots(params: ReproductionParams, needed: set[str]) -> dict[str, Path]:
    """Real dataset roots that exist, one for every dataset the plan needs unless synthetic
    data stands in; raises ClefError naming the first bad one."""
    unknown = sorted(set(params.roots) - set(DATASETS))
    if unknown:
        raise ClefError(
            f"roots: unknown dataset {', '.join(unknown)}; known: {', '.join(DATASETS)}"
        )
    for name, root in sorted(params.roots.items()):
        if not Path(root).exists():
            raise ClefError(f"{name}: dataset root {root} does not exist")
    missing = sorted(d for d in needed if d not in params.roots)
    if missing and not params.synthetic:
        raise ClefError(
            f"no root given for {', '.join(missing)} (synthetic is off): pass roots "
            f"{{name: path}} for each, or synthetic=true"
        )
    return {name: Path(root) for name, root in params.roots.items()}


def checked(
    params: ReproductionParams,
) -> tuple[dict[str, ExperimentConfig], dict[str, list[Unit]], dict[str, Path]]:
    """Everything the parameters decide, checked before any work (and before Ray starts):
    the configs (preset, overrides, datasets, folds), their plans and the real roots."""
    cfgs = configs(params)
    plans = {name: plan(cfg) for name, cfg in cfgs.items()}
    return cfgs, plans, check_roots(params, needed_datasets(params, plans))


def needed_datasets(params: ReproductionParams, plans: dict[str, list[Unit]]) -> set[str]:
    """The datasets the plans train on, and those the zero-shot experiments read."""
    needed = set().union(*(datasets_of(units) for units in plans.values()))
    return needed | (zeroshot_datasets() if params.zeroshot else set())


def _settle(futures: dict[str, PrefectFuture]) -> str | None:
    """Wait for every task; None when all completed, else the first failure's own message.

    The tasks that never ran because something upstream failed end Pending/NotReady in
    Prefect; they are set to Cancelled here so that the UI shows them ended, not running on.
    """
    wait(list(futures.values()))
    cause = None
    for label, future in futures.items():  # submission order: upstream before downstream
        if future.state.is_failed():
            try:
                future.result()
            except ClefError as err:
                cause = str(err)
            except BaseException as err:
                cause = f"{label} failed: {type(err).__name__}: {err}"
            break
    if cause is None:
        return None
    _cancel([f for f in futures.values() if not f.state.is_final()], f"not run: {cause}")
    return cause


def _cancel(futures: list[PrefectFuture], message: str, patience: float = 20) -> None:
    """Set the tasks to Cancelled. Best effort: a task run reaches the server through its
    event stream, possibly after this asks (404), so each is retried for `patience` seconds;
    the flow's own message must survive whatever happens here."""
    import time

    from prefect import get_client

    deadline = time.monotonic() + patience
    with get_client(sync_client=True) as client:
        for future in futures:
            while True:
                try:
                    client.set_task_run_state(
                        future.task_run_id, Cancelled(message=message), force=True
                    )
                    break
                except Exception as err:  # ObjectNotFound / HTTP 404 until the run is known
                    if time.monotonic() > deadline:
                        get_run_logger().warning("could not cancel %s: %s", future.task_run_id, err)
                        break
                    time.sleep(0.5)


@flow(name="clef", task_runner=ThreadPoolTaskRunner(max_workers=8), log_prints=True)
def clef(
    preset: str = "cpu-tiny",
    overrides: list[str] | None = None,
    datasets: list[str] | None = None,
    folds: list[int] | None = None,
    ablations: list[str] | None = None,
    weights: dict[str, Path] | None = None,
    zeroshot: bool = False,
    probes: bool = False,
    synthetic: bool = True,
    roots: dict[str, Path] | None = None,
    data_dir: Path | None = None,
    ray_address: str | None = None,
    mlflow_uri: str | None = None,
    synthetic_preset: str = "demo",
) -> str | State:
    """Reproduce CLEF: preprocess, pre-train, fine-tune every fold, evaluate, report.

    Parameters as in `ReproductionParams` (None = empty for overrides, ablations, weights,
    roots).
    """
    configure_process()  # the flow's start: a deployment's run has no CLI before it
    try:
        params = ReproductionParams(
            preset=preset, overrides=overrides or [], datasets=datasets, folds=folds,
            ablations=ablations or [], weights=weights or {}, zeroshot=zeroshot,
            probes=probes, synthetic=synthetic,
            roots=roots or {}, data_dir=data_dir, ray_address=ray_address, mlflow_uri=mlflow_uri,
            synthetic_preset=synthetic_preset,
        )  # fmt: skip
        return _reproduce(params)
    except ValidationError as err:
        first = err.errors()[0]
        return _failed(f"parameter {'.'.join(map(str, first['loc']))}: {first['msg']}")
    except ClefError as err:  # the user's input: one line, no traceback
        return _failed(str(err))


def _failed(cause: str) -> State:
    """The run's end: Failed, with `cause` as its state message.

    `prefect deployment run --watch` prints the run's events, not its state message (nor,
    in 3.8, its logs): the cause also goes out as an event on the run, named by it, before
    the final state, so that the watch shows it as one line.
    """
    from prefect.context import FlowRunContext
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    get_run_logger().error(cause)
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        resource = {
            "prefect.resource.id": f"prefect.flow-run.{context.flow_run.id}",
            "prefect.resource.name": cause,
        }
        try:
            emit_event(event="clef.run.failed-because", resource=resource)
            EventsWorker.instance().wait_until_empty()
        except Exception as err:  # the state message below still says it
            get_run_logger().warning("could not send the cause as an event: %s", err)
    return Failed(message=cause)


def _reproduce(params: ReproductionParams) -> str | State:
    import ray

    from clef_core.common.runtime import init_ray
    from flows.train import new_reproduction_id, run_book
    from synthetic.spec import READER_ROOTS

    cfgs, plans, roots = checked(params)
    main = cfgs[MAIN]
    needed = needed_datasets(params, plans)
    reproduction = new_reproduction_id()
    started = init_ray(main.compute.ray_address)
    try:
        if needed - set(roots):
            synth = synthetic_data(main.data.data_dir / "synthetic", params.synthetic_preset)
            roots = {d: synth / folder for d, folder in READER_ROOTS.items()} | roots
        shards = {
            d: preprocess.with_options(task_run_name=f"preprocess-{d}").submit(
                # A path or URI string, not a Location: Prefect hashes a task's inputs.
                d,
                roots[d],
                main.data.shards or main.data.data_dir / "shards",
                main.data.image_size,
                main.data.data_dir / "shards",
            )
            for d in sorted(needed)
        }
        books: dict[str, RunBook] = {}
        futures: dict[str, dict[Unit, PrefectFuture]] = {}
        scored: dict[str, dict[Unit, PrefectFuture]] = {}  # the evaluation step of stage 2
        for name, units in plans.items():
            books[name] = run_book(
                cfgs[name], reproduction if name == MAIN else f"{reproduction}-{name}"
            )
            mine: dict[Unit, PrefectFuture] = {}
            for unit in units:
                init = mine.get(unit.init) if unit.init else None
                mine[unit] = train_unit.with_options(task_run_name=f"{name}:{unit.name}").submit(
                    cfgs[name], unit, books[name], init, wait_for=[shards[unit.dataset]]
                )
            futures[name] = mine
            scored[name] = {
                unit: evaluate.with_options(task_run_name=f"{name}:evaluate-{unit.name}").submit(
                    cfgs[name], unit, future, books[name]
                )
                for unit, future in mine.items()
                if unit.stage == 2
            }
        zs = None
        if params.zeroshot:
            zs = zeroshot.submit(
                main, run_book(main, f"{reproduction}-zeroshot"),
                main.data.data_dir / "reports" / reproduction,
                wait_for=[shards[d] for d in sorted(zeroshot_datasets())],
            )  # fmt: skip
        probed = None
        if params.probes:
            from flows.probes import probes as probe_task

            stage1 = [f for u, f in futures[MAIN].items() if u.stage == 1]
            probed = probe_task.submit(
                main, stage1, run_book(main, f"{reproduction}-probe"),
                main.data.data_dir / "reports" / reproduction,
            )  # fmt: skip
        every = {f"preprocess {d}": f for d, f in shards.items()} | {
            f"{name}:{unit.name}": f for name, mine in futures.items() for unit, f in mine.items()
        } | {
            f"{name}:evaluate {unit.name}": f
            for name, mine in scored.items() for unit, f in mine.items()
        } | ({"zero-shot": zs} if zs is not None else {}) | (
            {"probes": probed} if probed is not None else {}
        )  # fmt: skip
        cause = _settle(every)
        if cause is not None:
            for book in books.values():  # parents end FAILED, not RUNNING forever
                book.close(ok=False)
            return _failed(cause)
        runs = {
            name: [scored[name][u].result() if u in scored[name] else f.result()
                   for u, f in mine.items()]
            for name, mine in futures.items()
        }  # fmt: skip
        out = main.data.data_dir / "reports" / reproduction
        report = write_report(
            runs, books, params, out, zs.result() if zs else None,
            probed.result() if probed else None,
        )  # fmt: skip
    finally:
        if started:
            ray.shutdown()
    return str(report)
