"""Run one protocol unit (a stage on a dataset's fold) end to end: train it on Ray, evaluate
it, record it in MLflow as a nested run with its plots, and cache its result by key.

A unit's folder `<data_dir>/runs/<unit>-<key>/` holds `checkpoint/`, for stage 2 the held-out
`predictions.parquet` its metrics are recomputed from (`clef_core.heldout`), and `result.json`, the
latter written last and atomically: a unit whose result exists is not trained again (its
metrics are logged again under the new reproduction, tagged `clef.cached`), so a rerun after
a failure redoes only what failed and a rerun with nothing changed finishes at once.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clef_core import plots
from clef_core.config import ExperimentConfig
from clef_core.heldout import FILE as PREDICTIONS
from clef_core.heldout import save_held_out
from clef_core.labels import LabelSpace
from clef_core.metrics import always_present_f1, au_auc, au_f1, confusion_matrix
from clef_core.protocol import Unit, read_manifests, unit_key
from clef_core.tracking import RunBook


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
    return cfg.data.data_dir / "runs" / f"{unit.name}-{key}"


def key_of(cfg: ExperimentConfig, unit: Unit) -> str:
    chain, u = set(), unit
    while u is not None:
        chain.add(u.dataset)
        u = u.init  # type: ignore[assignment]
    return unit_key(cfg, unit, read_manifests(cfg.data.shard_dir, chain))


def cached_result(cfg: ExperimentConfig, unit: Unit) -> UnitResult | None:
    path = unit_dir(cfg, unit, key_of(cfg, unit)) / "result.json"
    return UnitResult.read(path) if path.is_file() else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
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
    import time

    from clef_core.ray_train import StageJob, run_stage

    key = key_of(cfg, unit)
    folder = unit_dir(cfg, unit, key)
    tags = {"clef.unit": unit.name, "clef.stage": str(unit.stage), "clef.key": key}
    if unit.fold is not None:
        tags["clef.fold"] = str(unit.fold)
    done = folder / "result.json"
    if done.is_file():
        result = UnitResult.read(done)
        result.cached = True
        if book is not None:  # the new reproduction shows it too, pointing at the original
            run = book.child(
                unit.dataset, unit.name, {**tags, "clef.cached_from": str(result.run_id)}
            )
            book.tracker(run).log_metrics(result.metrics, step=0)
            book.finish(run)
        return result
    start = time.perf_counter()
    run_id = book.child(unit.dataset, unit.name, tags) if book else None
    try:
        if book and run_id:
            tracker = book.tracker(run_id)
            tracker.log_params({**cfg.flat(), "unit": unit.name, "init_from": init and init.unit})
        job = StageJob(
            stage=unit.stage,
            datasets=(unit.dataset,),
            train_parts=unit.train_parts,
            test_parts=unit.test_parts,
            init_from=init.checkpoint if init else None,
            name=f"{unit.name}-{key}",
        )
        stage = run_stage(
            cfg, job, cfg.data.data_dir / "ray_results", book.uri if book else None, run_id
        )
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder / "checkpoint", ignore_errors=True)
        shutil.copytree(stage.checkpoint, folder / "checkpoint")
        metrics = {k: float(v) for k, v in stage.metrics.items() if k != "epoch"}
        if unit.stage == 2:
            # The held-out predictions as a table; the result is what it recomputes to.
            held_out = save_held_out(
                folder / "checkpoint", folder / PREDICTIONS, cfg.data.shard_dir, unit.dataset,
                unit.train_parts, unit.test_parts, cfg.stage2.threshold,
            )  # fmt: skip
            if book and run_id:  # what the workers could not compute (the FER baseline)
                extra = {k: v for k, v in held_out.items() if k not in metrics}
                book.tracker(run_id).log_metrics(extra, step=int(stage.metrics.get("epoch", 0)))
            metrics |= held_out
        result = UnitResult(
            unit.name, unit.stage, unit.dataset, unit.fold, key,
            str(folder / "checkpoint"), metrics, run_id,
        )  # fmt: skip
        if book and run_id and unit.stage == 2:
            _log_stage2(cfg, book, run_id, unit, folder / "checkpoint")
            book.tracker(run_id).log_artifact(folder / PREDICTIONS, "predictions")
        result.seconds = time.perf_counter() - start
        _write_atomic(done, json.dumps(asdict(result), indent=1))
    except BaseException:
        if book and run_id:
            book.finish(run_id, ok=False)
        raise
    if book and run_id:
        book.finish(run_id)
    return result


def _log_stage2(
    cfg: ExperimentConfig, book: RunBook, run_id: str, unit: Unit, checkpoint: Path
) -> None:
    """Plots and predictions as artifacts; the model logged and registered as clef-<dataset>."""
    from clef_core.checkpoint import label_space_of, read_meta

    space = label_space_of(read_meta(checkpoint))
    tracker = book.tracker(run_id)
    preds = checkpoint / "predictions.npz"
    if space is not None and preds.is_file():
        with np.load(preds) as data, tempfile.TemporaryDirectory() as tmp:
            arrays = {k: data[k] for k in data.files}
            for path in evaluation_artifacts(
                arrays, space, Path(tmp), unit.name, cfg.stage2.threshold
            ):
                tracker.log_artifact(path, "plots")
    tracker.log_artifact(checkpoint, "model")
    if cfg.tracking.register_model:
        version = book.register(f"{cfg.tracking.experiment_prefix}-{unit.dataset}", run_id, "model")
        tracker.set_tags({"clef.model_version": version})


def summarize(results: list[UnitResult]) -> dict[str, Any]:
    """Mean over folds of every final metric of the stage-2 results of one dataset."""
    keys = sorted(
        {k for r in results for k in r.metrics if k.startswith(("f1_", "accuracy", "auc_"))}
    )
    return {k: float(np.mean([r.metrics[k] for r in results if k in r.metrics])) for k in keys}
