"""Run one protocol unit (a stage on a dataset's fold) end to end: train it on Ray, score it,
record it in MLflow as a nested run with its plots, and cache its result by key.

The cache (the unit's folder, its key, its lock, reuse and object storage) is
`clef_core.training.unit_cache`; a cached unit is not trained again, its metrics are logged
again under the new reproduction (tagged `clef.cached_from`). The result and checkpoint
never wait on the tracking server: every call is spooled, and a server that cannot make the
unit's run leaves it with a `NullRun` (`clef_core.tracking.runbook`), so the code below
records unconditionally.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from clef_core.common.results import UnitResult
from clef_core.method.config import ExperimentConfig
from clef_core.run.evaluate import evaluate
from clef_core.tracking.runbook import NullBook, NullRun, Run, RunBook
from clef_core.tracking.spool import spool_dir
from clef_core.training.protocol import Unit
from clef_core.training.unit_cache import (
    find_result,
    init_checkpoint,
    keep_checkpoint,
    key_of,
    ray_storage,
    save_result,
    stored_unit_dir,
    unit_dir,
    unit_lock,
)

log = logging.getLogger("clef.experiment")


def run_unit(
    cfg: ExperimentConfig,
    unit: Unit,
    book: RunBook | NullBook | None = None,
    init: UnitResult | None = None,
) -> UnitResult:
    """Train (or reuse) one unit and record it in `book` (None: nowhere); `init` is the
    result of `unit.init`."""
    book = book or NullBook()
    key = key_of(cfg, unit)
    folder = unit_dir(cfg, unit, key)
    tags = {"clef.unit": unit.name, "clef.stage": str(unit.stage), "clef.key": key}
    if unit.fold is not None:
        tags["clef.fold"] = str(unit.fold)
    # One run at a time trains this unit. The lock is a local file (an flock): with storage
    # at a URI it keeps the runs of this machine (this data dir) apart, not other machines'.
    with unit_lock(folder, unit.name):
        result = find_result(folder, stored_unit_dir(cfg, unit, key), unit.name)
        if result is None:
            return _train_unit(cfg, unit, book.open(unit.dataset, unit.name, tags), init, key)
    result.cached = True
    # The new reproduction shows it too, pointing at the original.
    run = book.open(unit.dataset, unit.name, {**tags, "clef.cached_from": str(result.run_id)})
    run.log_metrics(result.metrics, step=0)
    run.finish()
    return result


def _train_unit(
    cfg: ExperimentConfig, unit: Unit, run: Run | NullRun, init: UnitResult | None, key: str
) -> UnitResult:
    """Train the unit in Ray, score it, cache its result, then record it in `run` (which ends
    FAILED if anything here raises)."""
    from clef_core.training.ray_train import StageJob, run_stage

    folder, stored = unit_dir(cfg, unit, key), stored_unit_dir(cfg, unit, key)
    start = time.perf_counter()
    try:
        run.log_params({**cfg.flat(), "unit": unit.name, "init_from": init and init.unit})
        job = StageJob(
            stage=unit.stage, datasets=(unit.dataset,), train_parts=unit.train_parts,
            test_parts=unit.test_parts, init_from=init_checkpoint(cfg, unit, init),
            name=f"{unit.name}-{key}",
        )  # fmt: skip
        stage = run_stage(cfg, job, ray_storage(cfg), run.workers(spool_dir(cfg.data.data_dir)))
        checkpoint = keep_checkpoint(folder, stage.checkpoint, stored)
        metrics = {k: float(v) for k, v in stage.metrics.items() if k != "epoch"}
        # Stage 2: the held-out predictions as a table; the result is what it recomputes to.
        scored = evaluate(cfg, checkpoint, unit, folder, saved=True) if unit.stage == 2 else None
        held_out = scored.metrics if scored else {}
        result = UnitResult(
            unit.name, unit.stage, unit.dataset, unit.fold, key, str(checkpoint),
            metrics | held_out, run.run_id, seconds=time.perf_counter() - start,
        )  # fmt: skip
        # The result first: nothing below (tracking) can keep a trained unit from its cache.
        save_result(folder, result, stored)
        if scored is not None:
            # what the workers could not compute (the FER baseline)
            extra = {k: v for k, v in held_out.items() if k not in metrics}
            run.log_metrics(extra, step=int(stage.metrics.get("epoch", 0)))
            # Drawn for the run's artifacts only (a t-SNE takes seconds), in the unit's folder,
            # not a temporary one: a spooled call may send them later.
            for path in scored.plot(folder / "plots") if run.run_id is not None else []:
                run.log_artifact(path, "plots")
            _log_model(cfg, run, unit, checkpoint)
            run.log_artifact(scored.table, "predictions")
    except BaseException:
        run.finish(ok=False)
        raise
    run.finish()
    return result


def _log_model(cfg: ExperimentConfig, run: Run | NullRun, unit: Unit, checkpoint: Path) -> None:
    """The checkpoint logged as the run's model, registered as <prefix>-<dataset>."""
    run.log_artifact(checkpoint, "model")
    if cfg.tracking.register_model:
        name = f"{cfg.tracking.experiment_prefix}-{unit.dataset}"
        run.register(name, "model", model_description(cfg, unit))


def model_description(cfg: ExperimentConfig, unit: Unit) -> str:
    """A registered version's description: the unit and what its model started from."""
    source = cfg.model.init_source
    start = (
        source.describe() if source
        else str(cfg.model.init_weights) if cfg.model.init_weights
        else "none (trained from scratch)"
    )  # fmt: skip
    return f"CLEF {unit.name}, preset {cfg.preset}; initial weights: {start}"
