"""AU F1 (per AU and mean, unknown labels ignored) and expression accuracy / confusion."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AUF1:
    per_au: dict[int, float]  # AU id -> F1; NaN where the AU is undefined (see `undefined`)
    mean: float  # mean over AUs with a defined F1
    undefined: tuple[int, ...]  # AUs with no positive target and no positive prediction

    def as_metrics(self) -> dict[str, float]:
        out = {f"f1_au{au}": v for au, v in self.per_au.items() if not math.isnan(v)}
        out["f1_mean"] = self.mean
        return out


def au_f1(pred: np.ndarray, target: np.ndarray, au_ids: list[int] | tuple[int, ...]) -> AUF1:
    """F1 per AU over frames whose target is known (0/1; -1 is ignored).

    An AU with neither a positive target nor a positive prediction has no defined F1 (0/0):
    it is reported in `undefined` and left out of the mean, never counted as 0 or NaN'd in.
    An AU with positives that were all missed scores 0.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    per_au: dict[int, float] = {}
    undefined = []
    for c, au in enumerate(au_ids):
        known = target[:, c] >= 0
        p, t = pred[known, c] > 0, target[known, c] > 0
        tp = int(np.sum(p & t))
        denominator = int(np.sum(p)) + int(np.sum(t))
        if denominator == 0:
            per_au[au] = float("nan")
            undefined.append(au)
        else:
            per_au[au] = 2 * tp / denominator
    defined = [v for v in per_au.values() if not math.isnan(v)]
    return AUF1(per_au, float(np.mean(defined)) if defined else float("nan"), tuple(undefined))


def accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Share of samples whose predicted class equals the target (targets < 0 ignored)."""
    pred, target = np.asarray(pred), np.asarray(target)
    known = target >= 0
    return float(np.mean(pred[known] == target[known])) if known.any() else float("nan")


def confusion_matrix(pred: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    pred, target = np.asarray(pred), np.asarray(target)
    known = target >= 0
    out = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(out, (target[known], pred[known]), 1)
    return out
