"""Run one protocol unit (a stage on a dataset's fold) end to end: train it on Ray, evaluate
it, record it in MLflow as a nested run with its plots, and cache its result by key.

A unit's folder `<data_dir>/runs/<unit>-<key>/` holds `checkpoint/`, for stage 2 the held-out
`predictions.parquet` its metrics are recomputed from (`clef_core.training.heldout`), and `result.json`, the
latter written last and atomically: a unit whose result exists is not trained again (its
metrics are logged again under the new reproduction, tagged `clef.cached`), so a rerun after
a failure redoes only what failed and a rerun with nothing changed finishes at once.

Faults (README, "Faults a long run meets"): a cached unit whose result or checkpoint does not
open whole is reported in one line and trained again; two runs on one data dir train a unit
once (a lock per unit: the second waits and reuses the result); the result and checkpoint
never wait on the tracking server (its calls are spooled, `clef_core.tracking.runbook`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clef_core.common.storage import Location, Where
from clef_core.method.config import ExperimentConfig
from clef_core.method.labels import LabelSpace
from clef_core.method.metrics import always_present_f1, au_auc, au_f1, confusion_matrix
from clef_core.tracking import plots
from clef_core.tracking.runbook import RunBook
from clef_core.training.heldout import FILE as PREDICTIONS
from clef_core.training.heldout import save_held_out
from clef_core.training.protocol import Unit, read_manifests, unit_key

log = logging.getLogger("clef.experiment")


@dataclass
class UnitResult:
    unit: str  # e.g. "s2-bp4d-fold1"
    stage: int
    dataset: str
    fold: int | None
    key: str
    checkpoint: str  # folder with model.pt + meta.json
    # final: stage 2 f1_au<k>/f1_mean, f1_baseline_*, auc_* (AU) or accuracy, accuracy_baseline,
    # auc_macro (FER), recomputed from predictions.parquet; stage 1 its losses
    metrics: dict[str, float]
    run_id: str | None = None  # the MLflow run that trained it
    cached: bool = False
    seconds: float = 0.0

    @classmethod
    def read(cls, path: Path) -> UnitResult:
        return cls(**json.loads(path.read_text()))


def unit_dir(cfg: ExperimentConfig, unit: Unit, key: str) -> Path:
    """The unit's folder on this machine: in the storage folder (by default the data dir), or,
    when storage is a URI, its local copy under the data dir (`stored_unit_dir` is the store)."""
    home = cfg.data.data_dir if cfg.data.storage is None else cfg.data.storage_dir.local
    return (home or cfg.data.data_dir) / "runs" / f"{unit.name}-{key}"


def stored_unit_dir(cfg: ExperimentConfig, unit: Unit, key: str) -> Location | None:
    """Where the unit is kept when storage is a URI (object storage); None when the local
    folder is the store."""
    store = cfg.data.storage_dir
    return None if store.local is not None else store / "runs" / f"{unit.name}-{key}"


def ray_storage(cfg: ExperimentConfig) -> Where:
    """Ray Train's storage (each run's reported checkpoints): every worker writes there."""
    return (
        cfg.data.data_dir / "ray_results"
        if cfg.data.storage is None
        else cfg.data.storage_dir / "ray_results"
    )


def key_of(cfg: ExperimentConfig, unit: Unit) -> str:
    chain, u = set(), unit
    while u is not None:
        chain.add(u.dataset)
        u = u.init  # type: ignore[assignment]
    return unit_key(cfg, unit, read_manifests(cfg.data.shard_dir, chain))


def cached_result(cfg: ExperimentConfig, unit: Unit) -> UnitResult | None:
    """The unit's cached result when it and its checkpoint open whole, else None (a damaged
    one is reported in one line)."""
    key = key_of(cfg, unit)
    folder = unit_dir(cfg, unit, key)
    return _reusable(folder, unit.name) or _fetched(
        stored_unit_dir(cfg, unit, key), folder, unit.name
    )


def _fetched(stored: Location | None, folder: Path, name: str) -> UnitResult | None:
    """The unit's result from object storage, copied into `folder` (its result last, so a
    copy cut short is never taken for a finished unit), when the store has one."""
    if stored is None or not (stored / "result.json").is_file():
        return None
    log.info("%s: reusing its result from %s", name, stored)
    shutil.rmtree(folder, ignore_errors=True)
    stored.get(folder, skip=("result.json",))
    _write_atomic(folder / "result.json", (stored / "result.json").read_text())
    return _reusable(folder, name)


def _store(folder: Path, stored: Location | None) -> None:
    """The finished unit to object storage: its files, then its result (the mark of a
    finished unit there too)."""
    if stored is not None:
        stored.delete()  # an older, damaged copy
        stored.put(folder, skip=("result.json", "result.damaged.json"))
        (stored / "result.json").write_bytes((folder / "result.json").read_bytes())


def _reusable(folder: Path, name: str) -> UnitResult | None:
    """The result in `folder` if there is one and its files load whole; a damaged one is said
    (which file, why) and moved aside, so the unit is trained again."""
    from clef_core.method.checkpoint import checkpoint_problem

    done = folder / "result.json"
    if not done.is_file():
        return None
    try:
        result = UnitResult.read(done)
        # Always `checkpoint/` beside it: a result written on another machine names its path.
        result.checkpoint = str(folder / "checkpoint")
        problem = checkpoint_problem(Path(result.checkpoint))
    except (OSError, ValueError, TypeError) as err:  # cut short, not JSON, other fields
        problem = f"{done}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if problem is None and result.stage == 2:
        problem = _table_problem(folder / PREDICTIONS)
    if problem is None:
        return result
    log.warning("%s: the cached unit is damaged (%s); training it again", name, problem)
    done.replace(folder / "result.damaged.json")  # kept for a look; never read again
    return None


def _table_problem(path: Path) -> str | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as err:
        return f"{path}: {str(err).splitlines()[0]}"
    return None


@contextlib.contextmanager
def unit_lock(folder: Path, name: str) -> Iterator[None]:
    """Hold the unit's lock (`<unit dir>.lock`, an flock: released by the kernel when its
    process dies, so a crashed run leaves no stale lock). A second run on the same data dir
    waits here, saying for whom, then finds the unit done and reuses it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.with_name(f"{folder.name}.lock")
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another run"
            log.warning("%s: being trained by %s; waiting for it to reuse its result", name, holder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {os.uname().nodename}")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def evaluation_artifacts(
    pred: dict[str, np.ndarray], space: LabelSpace, out: Path, title: str, threshold: float
) -> list[Path]:
    """Per-AU F1 bars (AU) or confusion matrix (FER), and the t-SNE of the features."""
    scores, targets, features = pred["scores"], pred["targets"], pred["features"]
    # Features may be a sample of the rows (`save_predictions`): their targets, in order.
    sampled = targets[pred["feature_rows"]] if "feature_rows" in pred else targets
    if space.kind == "au":
        f1 = au_f1(scores > threshold, targets, space.labels)
        baseline = always_present_f1(targets, space.labels).per_au
        auc = au_auc(scores, targets, space.labels).per_au
        paths = [plots.au_f1_bars(f1.per_au, out / "f1_per_au.png", title, baseline, auc)]
        # Colour t-SNE points by the AU most often present in the split, shown vs absent.
        top = int(np.argmax((targets > 0).sum(0)))
        groups = (sampled[:, top] > 0).astype(int)
        names = [f"AU{space.labels[top]} absent", f"AU{space.labels[top]} present"]
    else:
        matrix = confusion_matrix(scores.argmax(1), targets, space.n)
        paths = [plots.confusion(matrix, list(space.labels), out / "confusion.png", title)]
        groups, names = sampled, list(space.labels)
    if len(features) >= 10:
        paths.append(plots.tsne(features, groups, names, out / "tsne.png", f"{title}: t-SNE"))
    return paths


def run_unit(
    cfg: ExperimentConfig,
    unit: Unit,
    book: RunBook | None,
    init: UnitResult | None = None,
) -> UnitResult:
    """Train (or reuse) one unit and record it; `init` is the result of `unit.init`."""
    key = key_of(cfg, unit)
    folder = unit_dir(cfg, unit, key)
    tags = {"clef.unit": unit.name, "clef.stage": str(unit.stage), "clef.key": key}
    if unit.fold is not None:
        tags["clef.fold"] = str(unit.fold)
    stored = stored_unit_dir(cfg, unit, key)
    # One run at a time trains this unit. The lock is a local file (an flock): with storage
    # at a URI it keeps the runs of this machine (this data dir) apart, not other machines'.
    with unit_lock(folder, unit.name):
        result = _reusable(folder, unit.name) or _fetched(stored, folder, unit.name)
        if result is None:
            return _train_unit(cfg, unit, book, init, key, folder, tags)
    result.cached = True
    if book is not None:  # the new reproduction shows it too, pointing at the original
        run = _child(book, unit, {**tags, "clef.cached_from": str(result.run_id)})
        if run is not None:
            book.tracker(run).log_metrics(result.metrics, step=0)
            book.finish(run)
    return result


def _child(book: RunBook, unit: Unit, tags: dict[str, str]) -> str | None:
    """The unit's MLflow run, or None when the server cannot make one now: the unit is
    trained anyway (its result and checkpoint do not need the server), without a run."""
    try:
        return book.child(unit.dataset, unit.name, tags)
    except Exception as err:  # the server is down: training goes on without a run
        log.warning("%s: MLflow at %s could not make its run (%s); training it without one",
                    unit.name, book.uri, str(err).splitlines()[0][:200])  # fmt: skip
        return None


def _train_unit(
    cfg: ExperimentConfig,
    unit: Unit,
    book: RunBook | None,
    init: UnitResult | None,
    key: str,
    folder: Path,
    tags: dict[str, str],
) -> UnitResult:
    import time

    from clef_core.training.ray_train import StageJob, run_stage

    done = folder / "result.json"
    stored = stored_unit_dir(cfg, unit, key)
    start = time.perf_counter()
    run_id = _child(book, unit, tags) if book else None
    try:
        if book and run_id:
            tracker = book.tracker(run_id)
            tracker.log_params({**cfg.flat(), "unit": unit.name, "init_from": init and init.unit})
        job = StageJob(
            stage=unit.stage,
            datasets=(unit.dataset,),
            train_parts=unit.train_parts,
            test_parts=unit.test_parts,
            init_from=_init_from(cfg, unit, init),
            name=f"{unit.name}-{key}",
        )
        stage = run_stage(
            cfg, job, ray_storage(cfg), book.uri if book and run_id else None, run_id
        )  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder / "checkpoint", ignore_errors=True)
        shutil.copytree(stage.checkpoint, folder / "checkpoint")
        if stored is not None:  # the download of the remote checkpoint: copied, not needed
            shutil.rmtree(stage.checkpoint, ignore_errors=True)
        metrics = {k: float(v) for k, v in stage.metrics.items() if k != "epoch"}
        extra: dict[str, float] = {}
        if unit.stage == 2:
            # The held-out predictions as a table; the result is what it recomputes to.
            held_out = save_held_out(
                folder / "checkpoint", folder / PREDICTIONS, cfg.data.shard_dir, unit.dataset,
                unit.train_parts, unit.test_parts, cfg.stage2.threshold,
            )  # fmt: skip
            extra = {k: v for k, v in held_out.items() if k not in metrics}
            metrics |= held_out
        result = UnitResult(
            unit.name, unit.stage, unit.dataset, unit.fold, key,
            str(folder / "checkpoint"), metrics, run_id,
        )  # fmt: skip
        result.seconds = time.perf_counter() - start
        # The result first: nothing below (tracking) can keep a trained unit from its cache.
        _write_atomic(done, json.dumps(asdict(result), indent=1))
        _store(folder, stored)
        if book and run_id and unit.stage == 2:
            # what the workers could not compute (the FER baseline)
            book.tracker(run_id).log_metrics(extra, step=int(stage.metrics.get("epoch", 0)))
            _log_stage2(cfg, book, run_id, unit, folder / "checkpoint")
            book.tracker(run_id).log_artifact(folder / PREDICTIONS, "predictions")
    except BaseException:
        if book and run_id:
            book.finish(run_id, ok=False)
        raise
    if book and run_id:
        book.finish(run_id)
    return result


def _init_from(cfg: ExperimentConfig, unit: Unit, init: UnitResult | None) -> str | None:
    """The init unit's checkpoint as the workers read it: its URI when storage is one (every
    node reaches it), else its local folder."""
    if init is None or unit.init is None:
        return init.checkpoint if init else None
    stored = stored_unit_dir(cfg, unit.init, init.key)
    return init.checkpoint if stored is None else (stored / "checkpoint").full_uri


def _log_stage2(
    cfg: ExperimentConfig, book: RunBook, run_id: str, unit: Unit, checkpoint: Path
) -> None:
    """Plots and predictions as artifacts; the model logged and registered as clef-<dataset>."""
    from clef_core.method.checkpoint import label_space_of, read_meta

    space = label_space_of(read_meta(checkpoint))
    tracker = book.tracker(run_id)
    preds = checkpoint / "predictions.npz"
    if space is not None and preds.is_file():
        # In the unit's folder, not a temporary one: a spooled call may send them later.
        with np.load(preds) as data:
            arrays = {k: data[k] for k in data.files}
        out = checkpoint.parent / "plots"
        for path in evaluation_artifacts(arrays, space, out, unit.name, cfg.stage2.threshold):
            tracker.log_artifact(path, "plots")
    tracker.log_artifact(checkpoint, "model")
    if cfg.tracking.register_model:
        book.register(f"{cfg.tracking.experiment_prefix}-{unit.dataset}", run_id, "model")


def summarize(results: list[UnitResult]) -> dict[str, Any]:
    """Mean over folds of every final metric of the stage-2 results of one dataset."""
    keys = sorted(
        {k for r in results for k in r.metrics if k.startswith(("f1_", "accuracy", "auc_"))}
    )
    return {k: float(np.mean([r.metrics[k] for r in results if k in r.metrics])) for k in keys}
