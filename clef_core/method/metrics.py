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


# --- Did it learn? The trivial baselines and threshold-free scores beside F1 / accuracy. ---


def always_present_f1(target: np.ndarray, au_ids: list[int] | tuple[int, ...]) -> AUF1:
    """F1 of the constant predictor that says every AU is present on every frame (the floor
    a model must beat; per AU it is 2p / (1 + p) for a positive rate p among known frames)."""
    target = np.asarray(target)
    return au_f1(np.ones_like(target), target, au_ids)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the binary labels `positive`, as the
    Mann-Whitney statistic with average ranks for ties (equal to scikit-learn's
    roc_auc_score). NaN when only one class is present: the AUC is undefined then."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranked = scores[order]
    # Average rank (1-based) of each group of tied scores.
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], len(ranked)]
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class AUAUC:
    per_au: dict[int, float]  # AU id -> ROC-AUC; NaN where undefined (see `undefined`)
    mean: float  # mean over AUs with a defined AUC
    undefined: tuple[int, ...]  # AUs whose known held-out targets are all 0 or all 1

    def as_metrics(self) -> dict[str, float]:
        out = {f"auc_au{au}": v for au, v in self.per_au.items() if not math.isnan(v)}
        out["auc_mean"] = self.mean
        return out


def au_auc(scores: np.ndarray, target: np.ndarray, au_ids: list[int] | tuple[int, ...]) -> AUAUC:
    """ROC-AUC per AU over frames whose target is known (-1 ignored). An AU with a single
    class among its known targets has no AUC: it is listed in `undefined` and left out of the
    mean (never counted as 0.5)."""
    scores, target = np.asarray(scores), np.asarray(target)
    per_au: dict[int, float] = {}
    for c, au in enumerate(au_ids):
        known = target[:, c] >= 0
        per_au[au] = roc_auc(scores[known, c], target[known, c] > 0)
    defined = [v for v in per_au.values() if not math.isnan(v)]
    undefined = tuple(au for au, v in per_au.items() if math.isnan(v))
    return AUAUC(per_au, float(np.mean(defined)) if defined else float("nan"), undefined)


def macro_ovr_auc(scores: np.ndarray, target: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """Macro one-vs-rest ROC-AUC of class probabilities [N, C] (targets < 0 ignored): the mean
    over classes of the AUC of "class c vs the rest" scored by p(c), as scikit-learn's
    roc_auc_score(multi_class="ovr", average="macro"). A class absent from the targets (or
    the only one present) has no AUC: returned in the second item, left out of the mean."""
    scores, target = np.asarray(scores), np.asarray(target)
    known = target >= 0
    scores, target = scores[known], target[known]
    aucs = [roc_auc(scores[:, c], target == c) for c in range(scores.shape[1])]
    defined = [a for a in aucs if not math.isnan(a)]
    undefined = tuple(c for c, a in enumerate(aucs) if math.isnan(a))
    return (float(np.mean(defined)) if defined else float("nan")), undefined


def majority_class(train_target: np.ndarray, n_classes: int) -> int:
    """The most frequent class among the training split's known labels (the lowest index on
    a tie). Ours: the paper reports no baseline; the class comes from the training labels,
    never from the held-out ones, so the baseline uses nothing a model could not know."""
    train_target = np.asarray(train_target)
    counts = np.bincount(train_target[train_target >= 0], minlength=n_classes)
    return int(np.argmax(counts))
