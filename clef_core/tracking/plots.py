"""Plots people look at instead of numbers: per-AU F1 bars (against the always-present
predictor, with the ROC-AUC and the paper's figures), a confusion
matrix, and the t-SNE of image features coloured by label (the paper's Figure 5);
`evaluation_artifacts` draws a scored split's set of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from clef_core.method.labels import LabelSpace
from clef_core.method.metrics import always_present_f1, au_auc, au_f1, confusion_matrix


def au_f1_bars(
    per_au: dict[int, float],
    path: Path,
    title: str,
    baseline: dict[int, float] | None = None,
    auc: dict[int, float] | None = None,
    paper: dict[int, float] | None = None,
) -> Path:
    """Bars of F1 per AU in % (all inputs are fractions); `baseline` (the always-present
    predictor's F1) as red ticks, `auc` (ROC-AUC x 100 on the same axis; 50 = chance, dotted)
    as diamonds, "n/a" where an AU has none; `paper` (its per-AU F1) as hollow grey bars."""
    aus = list(per_au)
    values = [100 * per_au[a] for a in aus]
    fig, ax = _figure(1.6 + 0.6 * len(aus), 3.8)
    x = np.arange(len(aus))
    if paper:
        ax.bar(x, [100 * paper.get(a, np.nan) for a in aus], width=0.8, fill=False,
               edgecolor="#888888", lw=0.8, label="paper F1 (real data)")  # fmt: skip
    ax.bar(x, np.nan_to_num(values), width=0.6, color="#3b7dd8", label="F1 (ours)")
    mean = np.nanmean(values) if values else float("nan")
    parts = [f"mean F1 {mean:.1f}"]
    if baseline:
        marks = [100 * baseline.get(a, np.nan) for a in aus]
        ax.scatter(x, marks, marker="_", s=400, lw=2.5, color="#d8573b", zorder=3,
                   label="F1 always present")  # fmt: skip
        counted = [m for m, v in zip(marks, values, strict=True) if not np.isnan(v)]
        parts.append(f"always present {np.nanmean(counted):.1f}")
    if auc:
        scores = np.array([100 * auc.get(a, np.nan) for a in aus])
        ax.scatter(x, scores, marker="D", s=22, color="k", zorder=4, label="ROC-AUC x 100")
        for i in np.flatnonzero(np.isnan(scores)):
            ax.text(x[i], 6, "AUC\nn/a", ha="center", va="bottom", fontsize=6)
        ax.axhline(50, color="k", lw=0.6, ls=":")
        if not np.isnan(scores).all():
            parts.append(f"AUC {np.nanmean(scores) / 100:.2f}")
    ax.axhline(mean, color="#3b7dd8", lw=0.8, ls="--")
    ax.set_xticks(x, [f"AU{a}" for a in aus], rotation=45, fontsize=8)
    ax.set_ylabel("F1 / AUC x 100 (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    ax.set_title(f"{title}\n{', '.join(parts)}", fontsize=9)
    return _save(fig, path)


def confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix [true, predicted] with the counts written in."""
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = _figure(1.2 + 0.6 * len(classes), 1.0 + 0.55 * len(classes))
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
    fig, ax = _figure(4.6, 4.0)
    for k, name in enumerate(names):
        m = y == k
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=6, label=name)
    ax.legend(fontsize=6, markerscale=2, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure of its own, outside pyplot: no backend is chosen or changed (a PNG is drawn by
    Agg whatever the process's backend), and nothing global holds it after saving."""
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


# The probes' figures (clef_core.training.probe) and, for each, the trivial answer beside it.
PROBE_BARS = (("au_f1", "AU F1", "au_f1_always"), ("au_auc", "AU ROC-AUC", None),
              ("activity_acc", "activity acc.", "activity_majority"),
              ("identity_acc", "identity acc.\n(lower: suppressed)", "identity_majority"))  # fmt: skip


def probe_bars(rows: list[dict[str, float | str]], path: Path, title: str) -> Path:
    """Grouped bars (%) of the linear probes, one colour per probed model (`label`), a
    `<key>_sd` error bar where given; the trivial answer of each group as a red tick (always
    present for AU F1, the largest class for the accuracies, 50 for the AUC), and on AU F1 a
    black tick: the same probes on the activity alone (`au_f1_activity`), where given."""
    fig, ax = _figure(7.5, 3.6)
    x = np.arange(len(PROBE_BARS))
    width = 0.8 / max(1, len(rows))
    colours = ["#999999", "#3b7dd8", "#2a9d5b", "#e0a030", "#8e5bd8", "#d8573b"]
    for i, row in enumerate(rows):
        values = [100 * float(row.get(k, np.nan)) for k, _, _ in PROBE_BARS]
        sd = [100 * float(row.get(f"{k}_sd", 0.0)) for k, _, _ in PROBE_BARS]
        ax.bar(x - 0.4 + width * (i + 0.5), values, width, yerr=sd, capsize=2,
               color=colours[i % len(colours)], label=str(row["label"]))  # fmt: skip
    trivial = [100 * float(rows[0].get(b, np.nan)) if b else 50.0 for _, _, b in PROBE_BARS]
    ax.scatter(x, trivial, marker="_", s=900, lw=2.5, color="#d8573b", zorder=3,
               label="trivial answer")  # fmt: skip
    if "au_f1_activity" in rows[0]:  # what features knowing only the activity would give
        ax.scatter([0], [100 * float(rows[0]["au_f1_activity"])], marker="_", s=900, lw=2.5,
                   color="#222222", zorder=3, label="AUs from the activity alone")  # fmt: skip
    ax.set_xticks(x, [name for _, name, _ in PROBE_BARS], fontsize=8)
    ax.set_ylabel("held-out score (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False,
              markerscale=0.3)  # fmt: skip
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


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
        paths = [au_f1_bars(f1.per_au, out / "f1_per_au.png", title, baseline, auc)]
        # Colour t-SNE points by the AU most often present in the split, shown vs absent.
        top = int(np.argmax((targets > 0).sum(0)))
        groups = (sampled[:, top] > 0).astype(int)
        names = [f"AU{space.labels[top]} absent", f"AU{space.labels[top]} present"]
    else:
        matrix = confusion_matrix(scores.argmax(1), targets, space.n)
        paths = [confusion(matrix, list(space.labels), out / "confusion.png", title)]
        groups, names = sampled, list(space.labels)
    if len(features) >= 10:
        paths.append(tsne(features, groups, names, out / "tsne.png", f"{title}: t-SNE"))
    return paths
