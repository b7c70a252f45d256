"""The `clef` Prefect flow: preprocess -> stage 1 -> stage 2 per dataset and fold -> evaluate
-> report, as a DAG of tasks. Thin: every task calls a library function.

Independent branches run concurrently (a thread pool); training units share the Ray
instance, at most `compute.concurrent_units` at a time. Each unit's result is cached by its
key (the shards' manifest hash + the resolved config, `clef_core.protocol.unit_key`), so a
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
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from clef_core.config import ExperimentConfig, ablation_overrides
from clef_core.experiment import UnitResult, run_unit
from clef_core.protocol import Unit, datasets_of, plan
from clef_core.report import MAIN
from clef_core.tracking import RunBook


class ReproductionParams(BaseModel):
    """What to reproduce: the flow's parameters (the Prefect UI renders them as a form)."""

    preset: str = "cpu-tiny"  # config preset: cpu-tiny (2 CPU cores), paper (GPUs), default
    overrides: list[str] = []  # config overrides, e.g. ["stage1.epochs=1"]
    datasets: list[str] | None = None  # protocols to run; None = the preset's protocol.datasets
    folds: list[int] | None = None  # fold numbers from 1; None = the preset's protocol.folds
    ablations: list[str] = []  # Table 6 rows besides the full method: baseline, N, N+D, PI+N+D
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
    from preprocessing.synth.generate import generate
    from preprocessing.synth.spec import make_spec

    if not (out / "synth.json").exists():
        generate(make_spec(out, preset), show_progress=False)
    return out


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=_is_io_error)
def preprocess(dataset: str, root: Path, shard_dir: Path, image_size: int) -> dict[str, Any]:
    """Aligned-face shards of one dataset (finished shards are skipped)."""
    from preprocessing.distributed import run_sequences
    from preprocessing.pipeline import PreprocessOptions, finish
    from preprocessing.pipeline import plan as plan_sequences

    opts = PreprocessOptions(dataset, root, shard_dir, image_size)
    sequences, issues = plan_sequences(opts)
    manifest = finish(opts, run_sequences(opts, sequences, show_progress=False), issues)
    get_run_logger().info(
        "%s: %d frames, %d without a face", dataset, manifest["rows"], manifest["no_face"]
    )
    return {k: manifest[k] for k in ("dataset", "rows", "no_face", "input_hash")}


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
    get_run_logger().info(
        "%s: %s%s", unit.name, result.metrics, " (cached)" if result.cached else ""
    )
    return result


@task(cache_policy=NO_CACHE)
def write_report(
    runs: dict[str, list[UnitResult]], books: dict[str, RunBook], params: ReproductionParams,
    out: Path,
) -> Path:  # fmt: skip
    """The results tables beside the paper's, as markdown + HTML, logged to every parent run."""
    from clef_core.report import write_report as write
    from flows.train import close_book

    path = write(runs, out, synthetic=params.synthetic and not params.roots)
    for name, book in books.items():
        for run_id in book.parents().values():
            book.tracker(run_id).log_artifact(path.parent, "report")
        close_book(book, runs[name])
    return path


def configs(params: ReproductionParams) -> dict[str, ExperimentConfig]:
    """The full method's config, and one per ablation row asked for."""
    from clef_core.runtime import default_data_dir
    from flows.train import resolve_config

    extra = list(params.overrides)
    if params.datasets is not None:
        extra.append(f"protocol.datasets={params.datasets}")
    if params.folds is not None:
        extra.append(f"protocol.folds={params.folds}")
    out = {}
    for name in [MAIN, *params.ablations]:
        sets = [*ablation_overrides(name), *extra]
        out[name] = resolve_config(
            params.preset, sets, params.data_dir or default_data_dir(), params.ray_address,
            params.mlflow_uri,
        )  # fmt: skip
    return out


@flow(name="clef", task_runner=ThreadPoolTaskRunner(max_workers=8), log_prints=True)
def clef(params: ReproductionParams = ReproductionParams()) -> str:
    """Reproduce CLEF: preprocess, pre-train, fine-tune every fold, evaluate, report."""
    import ray

    from clef_core.runtime import init_ray
    from flows.train import new_reproduction_id, run_book
    from preprocessing.synth.spec import READER_ROOTS

    cfgs = configs(params)
    main = cfgs[MAIN]
    reproduction = new_reproduction_id()
    started = init_ray(main.compute.ray_address)
    try:
        roots = dict(params.roots)
        if params.synthetic:
            synth = synthetic_data(main.data.data_dir / "synthetic", params.synthetic_preset)
            roots = {d: synth / folder for d, folder in READER_ROOTS.items()} | roots
        plans = {name: plan(cfg) for name, cfg in cfgs.items()}
        needed = set().union(*(datasets_of(units) for units in plans.values()))
        missing = sorted(d for d in needed if d not in roots)
        if missing:
            from clef_core.errors import ClefError

            raise ClefError(f"no root given for {', '.join(missing)}: pass roots={{name: path}}")
        shards = {
            d: preprocess.submit(d, Path(roots[d]), main.data.shard_dir, main.data.image_size)
            for d in sorted(needed)
        }
        books: dict[str, RunBook] = {}
        futures: dict[str, dict[Unit, PrefectFuture]] = {}
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
        try:
            runs = {name: [f.result() for f in mine.values()] for name, mine in futures.items()}
        except BaseException:
            for book in books.values():  # parents end FAILED, not RUNNING forever
                book.close(ok=False)
            raise
        out = main.data.data_dir / "reports" / reproduction
        report = write_report(runs, books, params, out)
    finally:
        if started:
            ray.shutdown()
    return str(report)
