"""Class weights from the training split's label frequencies.

Ours: the paper has a weight w_c in Eq. 4 and 5 but does not say how it is computed; these
formulas (and the clip to [1/10, 10]) are our choice.

- Expressions (Eq. 4): w_c = N / (C * n_c), the inverse class frequency, so every class
  carries the same total weight and a balanced dataset gets all ones. Classes absent from
  the training split get weight 0 (they contribute no samples anyway).
- AUs (Eq. 5): the positive weight w_c = n_neg_c / n_pos_c over frames where AU c is known,
  the usual BCE positive weight that makes positives and negatives count alike, clipped to
  [1/MAX_POS_WEIGHT, MAX_POS_WEIGHT] so an AU with a handful of positives does not dominate.
"""

from __future__ import annotations

import numpy as np

MAX_POS_WEIGHT = 10.0


def expression_weights(targets: np.ndarray, n_classes: int) -> np.ndarray:
    targets = np.asarray(targets)
    targets = targets[targets >= 0]
    counts = np.bincount(targets, minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = len(targets) / (n_classes * counts[present])
    return weights.astype(np.float32)


def au_pos_weights(targets: np.ndarray) -> np.ndarray:
    targets = np.asarray(targets)
    pos = (targets == 1).sum(0).astype(np.float64)
    neg = (targets == 0).sum(0).astype(np.float64)
    ratio = np.where(pos > 0, neg / np.maximum(pos, 1), MAX_POS_WEIGHT)
    return np.clip(ratio, 1 / MAX_POS_WEIGHT, MAX_POS_WEIGHT).astype(np.float32)
