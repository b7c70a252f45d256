"""What training hands to tracking and the report (the contract between the two, as the
manifest is between preprocessing and training): a protocol unit's result record, the mean
over folds of a dataset's results, and the zero-shot experiments' names as results carry them.
Plain data: `clef_core.training` writes these, `clef_core.tracking` reads them, and neither
imports the other."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The zero-shot experiments (`clef_core.training.zeroshot`), as its results name them and the
# CLEF poster's figures are keyed (`clef_core.tracking.paper.POSTER_ZEROSHOT`).
ZS_UNSEEN, ZS_AU_TO_FER = "expressions: seen -> unseen", "AUs -> expressions"


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


def summarize(results: list[UnitResult]) -> dict[str, Any]:
    """Mean over folds of every final metric of the stage-2 results of one dataset."""
    keys = sorted(
        {k for r in results for k in r.metrics if k.startswith(("f1_", "accuracy", "auc_"))}
    )
    return {k: float(np.mean([r.metrics[k] for r in results if k in r.metrics])) for k in keys}


# The figures a unit's log line shows; every metric is in MLflow and the unit's result.json.
_HEADLINE = ("f1_mean", "f1_baseline_mean", "auc_mean", "accuracy", "accuracy_baseline",
             "train_loss")  # fmt: skip


def headline(metrics: dict[str, float]) -> str:
    """One short line of a unit's main figures, not its hundred per-AU metrics."""
    shown = [f"{k} {metrics[k]:.4g}" for k in _HEADLINE if k in metrics]
    return ", ".join(shown) or f"{len(metrics)} metrics"
