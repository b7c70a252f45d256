"""Plots people look at instead of numbers: per-AU F1 bars (against a baseline), a confusion
matrix, and the t-SNE of image features coloured by label (the paper's Figure 5)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import numpy as np


def au_f1_bars(
    per_au: dict[int, float], path: Path, title: str, baseline: dict[int, float] | None = None
) -> Path:
    """Bars of F1 per AU (in %); `baseline` (e.g. the always-present predictor) as ticks."""
    aus = list(per_au)
    values = [100 * per_au[a] for a in aus]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(aus), 3.4))
    x = np.arange(len(aus))
    ax.bar(x, np.nan_to_num(values), color="#3b7dd8", label="CLEF")
    if baseline:
        ax.scatter(x, [100 * baseline.get(a, np.nan) for a in aus], marker="_", s=300,
                   color="#d8573b", label="always present", zorder=3)  # fmt: skip
        ax.legend(loc="upper right", fontsize=8)
    mean = np.nanmean(values) if values else float("nan")
    ax.axhline(mean, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, [f"AU{a}" for a in aus], rotation=45, fontsize=8)
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{title} (mean {mean:.1f})", fontsize=10)
    return _save(fig, path)


def confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix [true, predicted] with the counts written in."""
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(classes), 1.0 + 0.55 * len(classes)))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                color="white" if rows[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(len(classes)), classes, rotation=45, fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def tsne(
    features: np.ndarray, labels: np.ndarray, names: list[str], path: Path, title: str
) -> Path:
    """2-D t-SNE of L2-normalised features, one colour per label (at most 2000 points)."""
    from sklearn.manifold import TSNE

    keep = np.random.default_rng(0).permutation(len(features))[:2000]
    x, y = features[keep], labels[keep]
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(x)
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    for k, name in enumerate(names):
        m = y == k
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=6, label=name)
    ax.legend(fontsize=6, markerscale=2, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
