"""AU F1 and accuracy against scikit-learn, unknown-label masking, undefined AUs, class weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from clef_core.metrics import accuracy, au_f1
from clef_core.metrics import confusion_matrix as our_confusion
from clef_core.weights import MAX_POS_WEIGHT, au_pos_weights, expression_weights


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
