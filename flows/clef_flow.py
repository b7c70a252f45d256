"""The `clef` Prefect flow: preprocess -> stage 1 -> stage 2 per dataset and fold -> evaluation
-> report, as a DAG of tasks, each calling library code. What to train, in what order and with
which weights is decided and checked before any work (`clef_core.run.reproduction`), so a bad
parameter fails the run in seconds with one message. A failed task's dependants are Cancelled
and the run ends Failed with the task's own message (`flows.prefect_compat`). Independent
branches run concurrently; training units share the Ray instance, at most
`compute.concurrent_units` at a time. Each unit's result is cached by its key (shards'
manifest hash + resolved config), so a rerun redoes only what failed; the evaluation step
rescores a stage-2 checkpoint afresh, also on a cached unit. Retries only on I/O and Ray
connection errors.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import ValidationError

from clef_core.common.errors import ClefError
from clef_core.common.results import UnitResult, headline
from clef_core.common.runtime import configure_process
from clef_core.common.storage import location, upload_shards
from clef_core.method.config import MAIN, ExperimentConfig
from clef_core.run.reproduction import Reproduction, ReproductionParams, plan_reproduction
from clef_core.run.unit import run_unit
from clef_core.tracking.runbook import RunBook
from clef_core.tracking.zeroshot_report import record_zeroshot
from clef_core.training.protocol import Unit, zeroshot_datasets
from flows.prefect_compat import failed, retry_on_io, settle


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def synthetic_data(out: Path, preset: str) -> Path:
    """Generate the embedded synthetic datasets unless they are already there."""
    from synthetic.generate import generate
    from synthetic.spec import make_spec

    if not (out / "synth.json").exists():
        generate(make_spec(out, preset), show_progress=False)
    return out


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def preprocess(
    dataset: str, root: Path, shard_dir: str | Path, image_size: int, staging: Path
) -> dict[str, Any]:
    """Aligned-face shards of one dataset (finished shards are skipped). Shards at a URI are
    written in `staging` (this machine's <data_dir>/shards) and then copied there, the
    manifest last (ours: preprocessing itself writes local files; docs/clusters.md)."""
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


@task(retries=1, retry_delay_seconds=10, retry_condition_fn=retry_on_io, cache_policy=NO_CACHE)
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


@task(cache_policy=NO_CACHE)
def evaluate(cfg: ExperimentConfig, unit: Unit, trained: UnitResult, book: RunBook) -> UnitResult:
    """A finished stage-2 checkpoint scored afresh on its test part, in a run of its own
    (`clef_core.run.evaluate.evaluation_step`); it must agree with the training loop's."""
    from clef_core.run.evaluate import evaluation_step

    scored = evaluation_step(cfg, unit, trained, book)
    key = "f1_mean" if "f1_mean" in scored.metrics else "accuracy"
    get_run_logger().info(
        "%s evaluated: %s %.4f (the training loop's: %.4f)",
        unit.name, key, scored.metrics[key], trained.metrics.get(key, float("nan")),
    )  # fmt: skip
    return scored


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


@flow(name="clef", task_runner=ThreadPoolTaskRunner(max_workers=8), log_prints=True)
def clef(
    preset: str = "cpu-tiny",
    overrides: list[str] | None = None,
    datasets: list[str] | None = None,
    folds: list[int] | None = None,
    ablations: list[str] | None = None,
    weights: dict[str, str] | None = None,
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
        return failed(f"parameter {'.'.join(map(str, first['loc']))}: {first['msg']}")
    except ClefError as err:  # the user's input: one line, no traceback
        return failed(str(err))


@dataclass
class _Training:
    """The training DAG submitted: per row (the full method, each ablation row) its run book,
    its units' training tasks and its stage-2 units' evaluation steps."""

    books: dict[str, RunBook] = field(default_factory=dict)
    trained: dict[str, dict[Unit, PrefectFuture]] = field(default_factory=dict)
    scored: dict[str, dict[Unit, PrefectFuture]] = field(default_factory=dict)

    def labelled(self) -> dict[str, PrefectFuture]:
        """Every task by a readable label, upstream first (`settle` names the first failure)."""
        return {f"{name}:{u.name}": f for name, mine in self.trained.items() for u, f in mine.items()} | {
            f"{name}:evaluate {u.name}": f for name, mine in self.scored.items() for u, f in mine.items()
        }  # fmt: skip

    def results(self) -> dict[str, list[UnitResult]]:
        """Each row's unit results in plan order: a stage-2 unit's from its evaluation step."""
        return {
            name: [self.scored[name][u].result() if u in self.scored[name] else f.result()
                   for u, f in mine.items()]
            for name, mine in self.trained.items()
        }  # fmt: skip


def _submit_preprocessing(planned: Reproduction, synthetic_preset: str) -> dict[str, PrefectFuture]:
    """A preprocessing task per dataset needed, on the real roots given, else synthetic data."""
    from synthetic.spec import READER_ROOTS

    main, roots = planned.main, planned.roots
    if planned.needed - set(roots):
        synth = synthetic_data(main.data.data_dir / "synthetic", synthetic_preset)
        roots = {d: synth / folder for d, folder in READER_ROOTS.items()} | roots
    shard_dir = main.data.shards or main.data.data_dir / "shards"  # a path or URI string:
    staging = main.data.data_dir / "shards"  # not a Location, as Prefect hashes the inputs
    return {
        d: preprocess.with_options(task_run_name=f"preprocess-{d}").submit(
            d, roots[d], shard_dir, main.data.image_size, staging
        )
        for d in sorted(planned.needed)
    }


def _submit_training(
    planned: Reproduction, shards: dict[str, PrefectFuture], reproduction: str
) -> _Training:
    """Each row's units in order (stage 2 after its stage 1) and its evaluation steps."""
    from flows.train import run_book

    dag = _Training()
    for name, units in planned.plans.items():
        cfg = planned.configs[name]
        book = dag.books[name] = run_book(
            cfg, reproduction if name == MAIN else f"{reproduction}-{name}"
        )
        mine: dict[Unit, PrefectFuture] = {}
        for unit in units:
            init = mine.get(unit.init) if unit.init else None
            mine[unit] = train_unit.with_options(task_run_name=f"{name}:{unit.name}").submit(
                cfg, unit, book, init, wait_for=[shards[unit.dataset]]
            )
        dag.trained[name] = mine
        dag.scored[name] = {
            unit: evaluate.with_options(task_run_name=f"{name}:evaluate-{unit.name}").submit(
                cfg, unit, future, book
            )
            for unit, future in mine.items()
            if unit.stage == 2
        }
    return dag


def _submit_extras(
    params: ReproductionParams, planned: Reproduction, dag: _Training,
    shards: dict[str, PrefectFuture], reproduction: str, out: Path,
) -> dict[str, PrefectFuture]:  # fmt: skip
    """The zero-shot experiments and the stage-1 probes, when asked for."""
    from flows.train import run_book

    main, extras = planned.main, {}
    if params.zeroshot:
        extras["zero-shot"] = zeroshot.submit(
            main, run_book(main, f"{reproduction}-zeroshot"), out,
            wait_for=[shards[d] for d in sorted(zeroshot_datasets())],
        )  # fmt: skip
    if params.probes:
        from flows.probes import probes as probe_task

        stage1 = [f for u, f in dag.trained[MAIN].items() if u.stage == 1]
        extras["probes"] = probe_task.submit(
            main, stage1, run_book(main, f"{reproduction}-probe"), out
        )
    return extras


def _reproduce(params: ReproductionParams) -> str | State:
    import ray

    from clef_core.common.runtime import init_ray, use_data_dir
    from flows.train import new_reproduction_id

    planned = plan_reproduction(params)
    main = planned.main
    use_data_dir(main.data.data_dir)
    reproduction = new_reproduction_id()
    out = main.data.data_dir / "reports" / reproduction
    started = init_ray(main.compute.ray_address)
    try:
        shards = _submit_preprocessing(planned, params.synthetic_preset)
        dag = _submit_training(planned, shards, reproduction)
        extras = _submit_extras(params, planned, dag, shards, reproduction, out)
        preprocessing = {f"preprocess {d}": f for d, f in shards.items()}
        cause = settle(preprocessing | dag.labelled() | extras)
        if cause is not None:
            for book in dag.books.values():  # parents end FAILED, not RUNNING forever
                book.close(ok=False)
            return failed(cause)
        done = {label: f.result() for label, f in extras.items()}
        report = write_report(
            dag.results(), dag.books, params, out, done.get("zero-shot"), done.get("probes")
        )
    finally:
        if started:
            ray.shutdown()
    return str(report)
