"""The report's zero-shot table (`clef_core.training.zeroshot`): per experiment, FER dataset,
row (CLEF: stage 1 first; FaRL: none) and scoring (unseen classes only, or every class), our
accuracy as mean ± sd over seeds (n), beside chance, the largest tested class's share, the
AUC, and the CLEF poster's figure (`clef_core.tracking.paper.POSTER_ZEROSHOT`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from clef_core.tracking import paper
from clef_core.tracking.runbook import RunBook


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def mean_sd(values: list[float]) -> str:
    """`values` (fractions) as "mean ± sd (n)" in %; the sample sd (n - 1), none for one."""
    n = len(values)
    if n == 1:
        return f"{_pct(values[0])} (1)"
    return f"{_pct(float(np.mean(values)))} ± {100 * float(np.std(values, ddof=1)):.1f} ({n})"


def _legacy(r: dict[str, Any]) -> dict[str, Any]:
    """A result of the earlier code (one scoring, "accuracy"; no stage 1, one dataset)."""
    if "accuracy_unseen" in r:
        return r
    dataset = str(r["tested_on"]).split(":")[0]
    auc, chance = r.get("auc_macro", float("nan")), r["chance"]
    return {**r, "dataset": dataset, "row": "FaRL", "accuracy_unseen": r["accuracy"],
            "accuracy_all": float("nan"), "chance_unseen": chance, "chance_all": float("nan"),
            "auc_unseen": auc, "auc_all": float("nan")}  # fmt: skip


def _lines(key: tuple[str, str, str], runs: list[dict[str, Any]]) -> list[list[str]]:
    """The table's rows of one (experiment, dataset, row): one per scoring, or one when every
    class is unseen (the two scorings are then the same)."""
    poster = paper.POSTER_ZEROSHOT.get(key)
    theirs = "-" if poster is None else f"{poster:.2f}"
    both = runs[0]["chance_unseen"] != runs[0]["chance_all"]
    out = []
    for scoring in ("unseen", "all") if both else ("all",):
        label = scoring if both else "all (= unseen)"
        auc = [r[f"auc_{scoring}"] for r in runs]
        out.append([
            *key, label, mean_sd([r[f"accuracy_{scoring}"] for r in runs]),
            _pct(runs[0][f"chance_{scoring}"]), _pct(float(np.mean([r["largest_class"] for r in runs]))),
            "-" if all(math.isnan(a) for a in auc) else f"{np.nanmean(auc):.2f}",
            str(runs[0]["frames"]), theirs,
        ])  # fmt: skip
    return out


def zeroshot_table(results: list[dict[str, Any]]) -> list[str]:
    """The zero-shot results (`ZeroShotResult.as_dict`, any number of seeds) as markdown."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in map(_legacy, results):
        groups.setdefault((r["experiment"], r["dataset"], r["row"]), []).append(r)
    body = [line for key, runs in groups.items() for line in _lines(key, runs)]
    header = ["experiment", "dataset", "row", "scoring", "ours: mean ± sd (n)", "chance",
              "largest", "AUC", "frames", "poster"]  # fmt: skip
    lines = [*_table(header, body), ""]
    said: set[tuple[str, str, str]] = set()
    for r in map(_legacy, results):
        words = (r["experiment"], r["row"], f"trained on {r['trained_on']}")
        if words not in said and "start" in r:
            said.add(words)
            lines += [f"{r['experiment']}, {r['row']}: {r['start']}; {words[2]}.", ""]
    return lines + [_NOTE.format(source=paper.POSTER)]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


_NOTE = (
    "Accuracy (%) on the test frames of classes never trained on, each scored by the name "
    'features ("a photo of a person with {{name}}.") of: unseen, the unseen classes only; all, '
    "every class of the dataset (a seen class may win, and is then wrong). Mean ± sample sd "
    "over seeds (n). Chance: 1 / classes scored. Largest: the share of the most frequent "
    "tested class (the best constant answer; it uses the test labels). AUC: macro "
    "one-vs-rest ROC-AUC, mean over seeds. Rows: CLEF, stage 1 first (the one the protocol's "
    "stage 2 starts from); FaRL, no stage 1 (the config's initial weights: from scratch when "
    "none are given). Poster: {source}, on the real datasets with FaRL's weights (the paper "
    "reports no zero-shot figure). Ours: the seen classes, one split, the schedule "
    "(clef_core/training/zeroshot.py)."
)


def record_zeroshot(book: RunBook, results: list[Any], out: Path) -> Path:
    """`out/zeroshot.md` (the table), `out/zeroshot.json` (the results, to merge runs) and one
    MLflow run per zero-shot result (experiment, dataset, row, seed; experiment
    `<prefix>-zeroshot`, under the reproduction's parent run there)."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    md = out / "zeroshot.md"
    dicts = [r.as_dict() for r in results]
    md.write_text("\n".join(zeroshot_table(dicts)) + "\n")
    (out / "zeroshot.json").write_text(json.dumps(dicts, indent=1))
    for r in results:
        name = f"{r.experiment} | {r.dataset} | {r.row} | seed {r.seed}"
        tags = {"clef.zeroshot": r.experiment, "clef.dataset": r.dataset, "clef.row": r.row}
        run_id = book.child("zeroshot", name, tags)
        tracker = book.tracker(run_id)
        params = ("dataset", "row", "seed", "trained_on", "tested_on", "start")
        tracker.log_params({k: str(getattr(r, k)) for k in params})
        numbers = {k: float(v) for k, v in r.as_dict().items()
                   if isinstance(v, float | int) and k != "seed" and v == v}  # fmt: skip
        tracker.log_metrics(numbers, step=0)  # NaN (an undefined AUC) left out
        tracker.log_artifact(md)
        book.finish(run_id)
    book.close()
    return md
