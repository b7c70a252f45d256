"""AU F1, accuracy, ROC-AUC and the trivial baselines against scikit-learn, unknown-label masking, undefined AUs, class weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from clef_core.method.metrics import (
    accuracy,
    always_present_f1,
    au_auc,
    au_f1,
    macro_ovr_auc,
    majority_class,
    roc_auc,
)
from clef_core.method.metrics import confusion_matrix as our_confusion
from clef_core.method.weights import MAX_POS_WEIGHT, au_pos_weights, expression_weights


def test_au_f1_matches_sklearn_on_known_labels() -> None:
    rng = np.random.default_rng(0)
    target = rng.integers(-1, 2, (200, 5))
    pred = rng.integers(0, 2, (200, 5))
    result = au_f1(pred, target, [1, 2, 4, 6, 12])
    for c, au in enumerate([1, 2, 4, 6, 12]):
        known = target[:, c] >= 0
        assert result.per_au[au] == pytest.approx(f1_score(target[known, c], pred[known, c]))
    assert result.mean == pytest.approx(np.mean(list(result.per_au.values())))


def test_au_without_any_positive_is_reported_not_averaged() -> None:
    target = np.array([[1, 0, 0], [0, 0, 1], [1, 0, -1]])
    pred = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1]])
    result = au_f1(pred, target, [1, 2, 4])
    assert result.undefined == (2,) and math.isnan(result.per_au[2])
    assert result.per_au[4] == 0.0  # positives that were all missed score 0
    assert result.mean == pytest.approx((2 / 3 + 0.0) / 2)
    assert "f1_au2" not in result.as_metrics() and result.as_metrics()["f1_au1"] == pytest.approx(
        2 / 3
    )


def test_accuracy_and_confusion_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    target, pred = rng.integers(0, 7, 300), rng.integers(0, 7, 300)
    assert accuracy(pred, target) == pytest.approx(accuracy_score(target, pred))
    assert (our_confusion(pred, target, 7) == confusion_matrix(target, pred, labels=range(7))).all()


def test_expression_weights_balance_the_classes() -> None:
    targets = np.array([0] * 60 + [1] * 30 + [2] * 10)
    w = expression_weights(targets, 4)
    assert w[3] == 0.0
    assert w[0] * 60 == pytest.approx(w[1] * 30) == pytest.approx(w[2] * 10)
    assert np.mean(w[targets]) == pytest.approx(3 / 4)  # classes present / C
    assert np.allclose(expression_weights(np.repeat(np.arange(4), 5), 4), 1.0)


def test_au_pos_weights_ignore_unknown_and_clip() -> None:
    targets = np.array([[1, 0, -1], [0, 0, 1], [0, 0, 1], [0, 1, -1]] * 5)
    w = au_pos_weights(targets)
    assert w[0] == pytest.approx(3.0)  # 15 negatives / 5 positives
    assert w[2] == pytest.approx(1 / MAX_POS_WEIGHT)  # 10 positives, 0 negatives -> clipped
    assert au_pos_weights(np.zeros((50, 1)))[0] == MAX_POS_WEIGHT


def test_au_auc_matches_sklearn_with_ties_and_unknown_labels() -> None:
    rng = np.random.default_rng(2)
    target = rng.integers(-1, 2, (300, 4))
    scores = np.round(rng.random((300, 4)) + 0.3 * (target > 0), 1)  # rounded: many ties
    result = au_auc(scores, target, [1, 2, 4, 6])
    for c, au in enumerate([1, 2, 4, 6]):
        known = target[:, c] >= 0
        expected = roc_auc_score(target[known, c], scores[known, c])
        assert result.per_au[au] == pytest.approx(expected, abs=1e-12)
    assert result.mean == pytest.approx(np.mean(list(result.per_au.values())))
    assert result.per_au[1] > 0.6  # the scores carry signal: not a constant 0.5


def test_auc_of_an_au_with_one_class_is_undefined_not_half() -> None:
    target = np.array([[1, 0], [0, 0], [1, -1], [0, 0]])
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.5], [0.4, 0.3]])
    result = au_auc(scores, target, [1, 2])
    assert result.undefined == (2,) and math.isnan(result.per_au[2])
    assert result.mean == result.per_au[1] == 1.0  # AU2 is not averaged in as 0.5
    assert result.as_metrics() == {"auc_au1": 1.0, "auc_mean": 1.0}
    assert math.isnan(roc_auc(np.array([0.1, 0.2]), np.array([True, True])))


def test_always_present_f1_is_sklearns_f1_of_all_ones() -> None:
    rng = np.random.default_rng(3)
    target = rng.integers(-1, 2, (200, 3)) * (rng.random((200, 3)) < 0.5)  # sparse positives
    result = always_present_f1(target, [1, 2, 4])
    for c, au in enumerate([1, 2, 4]):
        known = target[:, c] >= 0
        ones = np.ones(int(known.sum()), int)
        assert result.per_au[au] == pytest.approx(f1_score(target[known, c], ones))
        p = np.mean(target[known, c] > 0)
        assert result.per_au[au] == pytest.approx(2 * p / (1 + p))


def test_macro_ovr_auc_matches_sklearn_and_skips_absent_classes() -> None:
    rng = np.random.default_rng(4)
    target = rng.integers(0, 5, 400)
    logits = rng.normal(size=(400, 5)) + 1.5 * np.eye(5)[target]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    auc, undefined = macro_ovr_auc(probs, target)
    assert undefined == ()
    assert auc == pytest.approx(roc_auc_score(target, probs, multi_class="ovr", average="macro"))
    # Class 4 never in the held-out targets, one unknown row: it is left out of the mean.
    partial = np.where(target == 4, 0, target)
    partial[0] = -1
    auc, undefined = macro_ovr_auc(probs, partial)
    keep = partial >= 0
    per_class = [roc_auc_score(partial[keep] == c, probs[keep, c]) for c in range(4)]
    assert undefined == (4,) and auc == pytest.approx(np.mean(per_class))


def test_majority_class_comes_from_counts_lowest_on_tie() -> None:
    assert majority_class(np.array([2, 2, 1, -1, -1, -1, 2, 0]), 4) == 2
    assert majority_class(np.array([3, 1, 1, 3]), 4) == 1
