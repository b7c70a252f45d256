"""The one way a stage-2 checkpoint is scored on its unit's held-out part: `evaluate` writes
`predictions.parquet` (the table every reported metric is recomputed from,
`clef_core.training.heldout`) and returns the metrics; `Evaluation.plot` draws its figures.

Its callers differ only in where the predictions come from and where the result goes:
- training (`clef_core.run.unit`): the training loop's own predictions, saved with the
  checkpoint; the unit's folder, its result and its MLflow run;
- the flow's evaluation step (`evaluation_step`): the checkpoint scored afresh into
  `<unit folder>/evaluation/`, logged as a run of its own nested under the unit's;
- `clef evaluate`: afresh, with plots, printed; no MLflow.
Every MLflow call goes through `RunBook.open`'s run: a server that is down leaves the
results written locally (and the calls spooled, or no run at all), as in training.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clef_core.common.results import UnitResult
from clef_core.method.config import ExperimentConfig
from clef_core.method.labels import LabelSpace
from clef_core.tracking.plots import evaluation_artifacts
from clef_core.tracking.runbook import NullBook, RunBook
from clef_core.training.evaluate import (
    EVALUATION,
    as_predictions,
    checkpoint_space,
    fresh_predictions,
    saved_predictions,
)
from clef_core.training.heldout import FILE as PREDICTIONS
from clef_core.training.heldout import write_held_out
from clef_core.training.protocol import Unit


@dataclass(frozen=True)
class Evaluation:
    unit: Unit
    space: LabelSpace
    metrics: dict[str, float]  # recomputed from `table`
    table: Path  # predictions.parquet
    arrays: dict[str, np.ndarray]  # scores, targets, features (maybe a sample: feature_rows)
    threshold: float

    @property
    def frames(self) -> int:
        return len(self.arrays["targets"])

    def plot(self, out: Path) -> list[Path]:
        """Per-AU F1 bars or the confusion matrix, and the t-SNE of the features, in `out`."""
        return evaluation_artifacts(self.arrays, self.space, out, self.unit.name, self.threshold)


def evaluate(
    cfg: ExperimentConfig,
    checkpoint: Path,
    unit: Unit,
    out: Path,
    *,
    saved: bool = False,
    device: str = "cpu",
) -> Evaluation:
    """Score `checkpoint` on `unit`'s test part into `out/predictions.parquet`: its saved
    predictions (`saved`, the training loop's), or afresh on `device`."""
    space = checkpoint_space(checkpoint)
    if saved:
        arrays = saved_predictions(checkpoint)
    else:
        arrays = fresh_predictions(cfg, checkpoint, unit.dataset, unit.test_parts, device)
    metrics = write_held_out(
        as_predictions(arrays), space, out / PREDICTIONS, cfg.data.shard_dir, unit.dataset,
        unit.train_parts, unit.test_parts, cfg.stage2.threshold,
    )  # fmt: skip
    return Evaluation(unit, space, metrics, out / PREDICTIONS, arrays, cfg.stage2.threshold)


_EVALUATING: dict[str, threading.Lock] = {}


def evaluation_step(
    cfg: ExperimentConfig,
    unit: Unit,
    trained: UnitResult,
    book: RunBook | NullBook | None = None,
    device: str = "cpu",
) -> UnitResult:
    """The flow's evaluation step: the finished stage-2 unit's checkpoint scored afresh on
    its test part (held-out subjects) into `<unit folder>/evaluation/` (predictions.parquet,
    metrics.json), logged as an MLflow run of its own; the unit's result with these metrics.

    Re-runnable on a finished checkpoint: a cached unit is evaluated again, not retrained (an
    evaluation already written for it is reused; delete the folder to score it anew)."""
    out = Path(trained.checkpoint).parent / EVALUATION
    done = out / "metrics.json"
    # Rows of the same training (a CLIP row and its FaRL row from scratch) share a folder.
    with _EVALUATING.setdefault(str(out), threading.Lock()):
        if done.is_file():
            metrics = json.loads(done.read_text())
        else:
            metrics = evaluate(cfg, Path(trained.checkpoint), unit, out, device=device).metrics
            tmp = done.with_name(f".{done.name}.tmp")
            tmp.write_text(json.dumps(metrics, indent=1))
            tmp.replace(done)
    # Nested under the training run it scores (not beside the units under the parent run:
    # a parent's children stay its units), in the reproduction that evaluated it.
    tags = {"clef.evaluation_of": unit.name, "clef.step": "evaluation", "clef.key": trained.key}
    run = (book or NullBook()).open(
        unit.dataset, f"{unit.name}-evaluation", tags, parent=trained.run_id
    )
    run.log_metrics(metrics, step=0)
    run.log_artifact(out, "evaluation")
    run.finish()
    return replace(trained, metrics={**trained.metrics, **metrics})
