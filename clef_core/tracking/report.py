"""The results report: tables laid out like the paper's, our numbers beside the paper's own
figures (`clef_core.tracking.paper`, labelled as the paper's), as markdown and an HTML page with the
per-AU bar charts and the t-SNE of stage-2 features (Figure 5).

Every F1 and accuracy stands beside what tells whether a model learned: the trivial
predictor's score (every AU present; the training split's majority expression) and a
threshold-free one (per-AU ROC-AUC; macro one-vs-rest AUC for expressions). AU tables have the
AUs as rows, so they fit an 80-column terminal (`clef report` prints the markdown with rich).
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from clef_core.common.datasets import REGISTRY, of_task
from clef_core.common.errors import ConfigError
from clef_core.common.results import UnitResult, summarize
from clef_core.method.checkpoint import label_space_of, read_meta
from clef_core.method.config import ABLATION_WEIGHTS, MAIN, ablation_name
from clef_core.tracking import paper, plots
from clef_core.tracking.zeroshot_report import zeroshot_table

AU_FOLDS = {name: REGISTRY[name].folds for name in of_task("au")}  # the AU datasets
PAPER = paper.MEANS  # mean F1 / accuracy (%) per dataset, the paper's
NOTE_AU = (
    "F1: ours, AU present when its probability > 0.5. Always present: F1 of predicting every "
    "AU present on every frame. AUC: ROC-AUC of the AU's probability (threshold-free; 0.50 = "
    "chance); n/a = the held-out frames hold one class only, so there is none (left out of "
    "the mean, not counted as 0.50). Paper: the CLEF row of the paper's Table {table}, on the "
    "real dataset."
)


def _pct(value: float | None) -> str:
    return "-" if value is None or np.isnan(value) else f"{100 * value:.1f}"


def _paper(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _cell(metrics: dict[str, Any], key: str, has: str, auc: bool = False) -> str:
    """A metric in %, or as an AUC; "n/a" when the result has the kind (`has`) but not this
    one (undefined there), "-" when the result predates it."""
    if key in metrics and not math.isnan(metrics[key]):
        return f"{metrics[key]:.2f}" if auc else _pct(metrics[key])
    return "n/a" if has in metrics else "-"


def _paper_table(dataset: str) -> int | str:
    """The number of the paper's table with the dataset's results, "-" when none."""
    table = REGISTRY[dataset].paper_table if dataset in REGISTRY else None
    return "-" if table is None else table


def _aus(results: list[UnitResult]) -> list[int]:
    prefixes = ("f1_au", "f1_baseline_au", "auc_au")
    found = {
        int(k[len(p) :]) for r in results for k in r.metrics for p in prefixes if k.startswith(p)
    }
    return sorted(found)


def au_table(dataset: str, results: list[UnitResult]) -> list[str]:
    """AUs as rows: ours (the mean over folds), always present, AUC, the paper; then, with
    more than one fold, each fold's F1."""
    results = sorted(results, key=lambda r: r.fold or 0)
    aus = _aus(results)
    mean = summarize(results)
    theirs = paper.AU_F1.get(dataset, {})
    rows = [
        [f"AU{a}", _cell(mean, f"f1_au{a}", "f1_mean"),
         _cell(mean, f"f1_baseline_au{a}", "f1_baseline_mean"),
         _cell(mean, f"auc_au{a}", "auc_mean", auc=True), _paper(theirs.get(a))]
        for a in aus
    ]  # fmt: skip
    rows.append(
        ["**mean**", f"**{_cell(mean, 'f1_mean', 'f1_mean')}**",
         _cell(mean, "f1_baseline_mean", "f1_baseline_mean"),
         _cell(mean, "auc_mean", "auc_mean", auc=True), _paper(PAPER.get(dataset))]
    )  # fmt: skip
    folds = ", ".join(str(r.fold) for r in results)
    lines = [
        f"Ours: {'mean of folds' if len(results) > 1 else 'fold'} {folds}.",
        "",
        *_table(["AU", "F1", "always present", "AUC", "paper"], rows),
        "",
        NOTE_AU.format(table=_paper_table(dataset)),
    ]
    if dataset in REGISTRY and REGISTRY[dataset].paper_note:
        lines[-1] += f" {REGISTRY[dataset].paper_note}"
    if len(results) > 1:
        per_fold = [
            [f"AU{a}", *[_cell(r.metrics, f"f1_au{a}", "f1_mean") for r in results]] for a in aus
        ]
        per_fold.append(["**mean**", *[_cell(r.metrics, "f1_mean", "f1_mean") for r in results]])
        header = ["AU", *[f"F1 fold {r.fold}" for r in results]]
        lines += ["", *_table(header, per_fold)]
    return lines


def _majority_name(result: UnitResult) -> str | None:
    """The majority class named in the unit's predictions.parquet, when it has one."""
    import pyarrow.parquet as pq

    path = Path(result.checkpoint).parent / "predictions.parquet"
    if not path.is_file():
        return None
    info = json.loads((pq.read_schema(path).metadata or {}).get(b"clef", b"{}"))
    return info.get("majority_class_name")


def fer_table(by_dataset: dict[str, list[UnitResult]]) -> list[str]:
    rows = []
    for d, rs in by_dataset.items():
        mean = summarize(rs)
        majority = _cell(mean, "accuracy_baseline", "accuracy_baseline")
        name = _majority_name(rs[0])
        rows.append([
            d, _cell(mean, "accuracy", "accuracy"),
            f"{majority} ({name})" if name and majority not in ("-", "n/a") else majority,
            _cell(mean, "auc_macro", "auc_macro", auc=True), f"{PAPER[d]:.2f}",
        ])  # fmt: skip
    return [
        *_table(["dataset", "accuracy", "majority class", "AUC", "paper"], rows),
        "",
        "Accuracy: ours, the arg-max class. Majority class: the accuracy of always predicting "
        "the training split's most frequent class (ours: chosen from the training labels). "
        "AUC: macro one-vs-rest ROC-AUC of the class probabilities (classes absent from the "
        "held-out labels left out). Paper: the CLEF row of the paper's Table 5, real data.",
    ]


def _weights_source(name: str, results: list[UnitResult]) -> str:
    """Where a row's models started: "scratch" when its config names no initial weights,
    else the source the row loads ("CLIP" or "FaRL": `config.ablation_init_weights`)."""
    for r in results:
        try:
            weights = read_meta(Path(r.checkpoint))["config"]["model"].get("init_weights")
        except Exception:  # a checkpoint moved away: the report still renders
            continue
        if not weights:
            return "scratch"
        try:
            return ABLATION_WEIGHTS[ablation_name(name)]
        except ConfigError:
            stem = Path(str(weights)).name.lower()
            return "FaRL" if "farl" in stem else "CLIP" if "clip" in stem else "file"
    return "?"


def _ours(results: list[UnitResult], dataset: str) -> dict[str, Any]:
    return summarize([r for r in results if r.stage == 2 and r.dataset == dataset])


def _table6_rows(runs: dict[str, list[UnitResult]]) -> list[list[str]]:
    """The paper's rows with ours beside them, then the rows of ours it lacks (SSL), if run."""
    placed = {i: name for name in runs if (i := paper.row_index(name)) is not None}
    rows = []
    for i, row in enumerate((*paper.TABLE6, *paper.OURS_ROWS)):
        name = placed.get(i)
        if i >= len(paper.TABLE6) and name is None:  # a row of ours, not run: left out
            continue
        ours = runs.get(name, []) if name else []
        bp4d, rafdb = _ours(ours, paper.TABLE6_AU), _ours(ours, paper.TABLE6_FER)
        rows.append([
            row.method, *["x" if c in row.components else "" for c in paper.COMPONENTS],
            "-" if row.bp4d is None else f"{row.bp4d:.1f}",
            _cell(bp4d, "f1_mean", "f1_mean") if ours else "",
            "-" if row.rafdb is None else f"{row.rafdb:.2f}",
            _cell(rafdb, "accuracy", "accuracy") if ours else "",
            _weights_source(name, ours) if name and ours else "",
        ])  # fmt: skip
    return rows


def ablation_table(runs: dict[str, list[UnitResult]]) -> list[str]:
    """The paper's Table 6 row by row with its figures, ours beside the row of the same name
    and the initial weights ours started from; then every run of ours in full (other
    datasets too, baselines, AUC)."""
    rows = _table6_rows(runs)
    header = [  # RAF: RAF-DB (the table fits 80 columns)
        "method", *paper.COMPONENTS, "BP4D paper", "BP4D ours", "RAF paper", "RAF ours", "from",
    ]  # fmt: skip
    lines = [
        *_table(header, rows),
        "",
        "Paper: its Table 6 (mean F1 on BP4D, accuracy on RAF-DB (RAF); real data). PA: stage 1 with "
        "activity texts; PI: stage 1 with images; I: image encoder; N: label names; D: label "
        "descriptions. The paper's CLIP and FaRL rows start from those weights, its CLEF rows "
        "from FaRL. Ours: our run of the row (`clef reproduce --ablation all`; rows named "
        "CLIP-I ... FaRL-I+N+D, PI ... PA+PI+N+D); from: the initial weights ours started "
        "from (CLIP, FaRL, or scratch: no weights given (`--weights clip=openai --weights "
        "farl=farl-base-ep64` fetches the paper's), and from scratch a CLIP row and its FaRL "
        "row are the same training). SSL (ours, not "
        "in the paper, so no paper figure; listed when run): stage 1 with instance pairing, "
        "the self-supervised pairing of the paper's Figure 1a (positives: only the other view "
        "of the same image), then the I or I+N+D head.",
        "",
    ]
    detail = []
    for name, results in runs.items():
        for d in sorted({r.dataset for r in results if r.stage == 2}):
            m = _ours(results, d)
            if d in AU_FOLDS:
                score, base = (
                    _cell(m, "f1_mean", "f1_mean"),
                    _cell(m, "f1_baseline_mean", "f1_baseline_mean"),
                )
                auc = _cell(m, "auc_mean", "auc_mean", auc=True)
            else:
                score, base = (
                    _cell(m, "accuracy", "accuracy"),
                    _cell(m, "accuracy_baseline", "accuracy_baseline"),
                )
                auc = _cell(m, "auc_macro", "auc_macro", auc=True)
            detail.append([name, d, score, base, auc])
    header = ["ours", "dataset", "F1 / acc.", "trivial", "AUC"]
    return lines + [
        *_table(header, detail),
        "",
        "Trivial: always present (AU F1) or the training split's majority class (accuracy).",
    ]


def probe_table(rows: list[dict[str, Any]]) -> list[str]:
    """The linear probes of frozen image features (`clef_core.training.probe`), each figure
    beside its trivial answer."""
    body = [
        [str(r.get("label", r["model"])), f"{r['dataset']} {r['fold']}", _pct(r["au_f1"]),
         _pct(r["au_f1_always"]), _pct(r.get("au_f1_activity")), f"{r['au_auc']:.2f}",
         _pct(r["activity_acc"]),
         _pct(r["activity_majority"]), _pct(r["identity_acc"]), _pct(r["identity_majority"])]
        for r in rows
    ]  # fmt: skip
    header = ["model", "fold", "AU F1", "always", "activity only", "AU AUC", "activity",
              "largest", "identity", "largest"]  # fmt: skip
    return [
        *_table(header, body),
        "",
        "Linear probes on the frozen image features (%): AUs and activity fitted on the fold's "
        "training people and scored on its held-out people; identity fitted on half of each "
        "training person's tasks and scored on the other half (lower = identity suppressed). "
        "always: F1 of every AU present; activity only: the same AU probes on the frame's "
        "activity alone (one-hot), a reference for features that know the activity and nothing "
        "else; largest: the largest class's share of the test "
        "frames (the best constant answer). Ours: the paper reports no probe.",
    ]


def _figures(dataset: str, results: list[UnitResult], out: Path) -> list[Path]:
    """Per-AU mean F1 bars (AU datasets) and the t-SNE of the first fold's features."""
    first = min(results, key=lambda r: r.fold or 0)
    checkpoint = Path(first.checkpoint)
    space = label_space_of(read_meta(checkpoint))
    preds = checkpoint / "predictions.npz"
    figures: list[Path] = []
    if space is None or not preds.is_file():
        return figures
    with np.load(preds) as data:
        arrays = {k: data[k] for k in data.files}
    figures += [
        p for p in plots.evaluation_artifacts(arrays, space, out / dataset, f"{dataset} fold {first.fold}", 0.5)
        if p.name == "tsne.png"
    ]  # fmt: skip
    if space.kind == "au":
        mean = summarize(results)
        nan = float("nan")
        per_au = {a: mean.get(f"f1_au{a}", nan) for a in space.labels}
        baseline = {a: mean.get(f"f1_baseline_au{a}", nan) for a in space.labels}
        auc = {a: mean.get(f"auc_au{a}", nan) for a in space.labels}
        theirs = {a: v / 100 for a, v in paper.AU_F1.get(dataset, {}).items()}
        folds = ", ".join(str(r.fold) for r in sorted(results, key=lambda r: r.fold or 0))
        title = f"{dataset}: {'mean of folds' if len(results) > 1 else 'fold'} {folds}"
        path = out / dataset / "f1_mean_per_au.png"
        figures.insert(0, plots.au_f1_bars(per_au, path, title, baseline, auc, theirs))
    return figures


def write_report(
    runs: dict[str, list[UnitResult]],
    out: Path,
    synthetic: bool,
    zeroshot: list[dict[str, Any]] | None = None,
    probes: list[dict[str, Any]] | None = None,
) -> Path:
    """report.md, report.html and results.json under `out`; returns report.md's path.
    `zeroshot`: the zero-shot experiments' results (`ZeroShotResult.as_dict`), when run;
    `probes`: the linear probes' (`ProbeResult.as_dict` with a `label`), when run."""
    out.mkdir(parents=True, exist_ok=True)
    main = [r for r in runs.get(MAIN, []) if r.stage == 2]
    by_dataset: dict[str, list[UnitResult]] = {}
    for r in main:
        by_dataset.setdefault(r.dataset, []).append(r)
    label = (
        "SYNTHETIC DATA (the embedded default): not comparable to the paper's numbers"
        if synthetic
        else "real data"
    )
    lines = ["# CLEF reproduction", "", f"Data: **{label}**.", ""]
    figures: dict[str, list[Path]] = {}
    for dataset, results in by_dataset.items():
        if dataset in AU_FOLDS:
            lines += [f"## {dataset}: AU detection, F1 (%)", "", *au_table(dataset, results), ""]
        figures[dataset] = _figures(dataset, results, out)
    fer = {d: rs for d, rs in by_dataset.items() if d not in AU_FOLDS}
    if fer:
        lines += ["## Expression recognition, accuracy (%)", "", *fer_table(fer), ""]
    if len(runs) > 1 or {paper.TABLE6_AU, paper.TABLE6_FER} & set(by_dataset):
        title = "## Table 6: key components (paper) and our runs"
        lines += [title, "", *ablation_table(runs), ""]
    if zeroshot:
        lines += ["## Zero-shot: classes never trained on", "", *zeroshot_table(zeroshot), ""]
    if probes:
        lines += ["## What stage 1 learned: linear probes", "", *probe_table(probes), ""]
        title = "Linear probes of the frozen image features, held-out people"
        figures["probes"] = [plots.probe_bars(probes, out / "probes" / "probes.png", title)]
    markdown = "\n".join(lines)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(_html(markdown, figures))
    dumped = {name: [asdict(r) for r in rs] for name, rs in runs.items()}
    (out / "results.json").write_text(
        json.dumps(
            {"synthetic": synthetic, "runs": dumped, "zeroshot": zeroshot, "probes": probes},
            indent=1,
        )
    )
    (out.parent / "latest").write_text(out.name)
    return out / "report.md"


def _html(markdown: str, figures: dict[str, list[Path]]) -> str:
    """A self-contained page: the markdown's tables as HTML tables, figures inlined."""
    body: list[str] = []
    rows: list[str] = []
    theirs: set[int] = (
        set()
    )  # columns holding the paper's figures: shaded, so none is taken for ours
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                cells = [html.escape(c.strip().strip("*")) for c in line.strip("|").split("|")]
                if not rows:
                    theirs = {i for i, c in enumerate(cells) if "paper" in c}
                tag = "th" if not rows else "td"
                rows.append("<tr>" + "".join(
                    f"<{tag} class='paper'>{c}</{tag}>" if i in theirs else f"<{tag}>{c}</{tag}>"
                    for i, c in enumerate(cells)
                ) + "</tr>")  # fmt: skip
            continue
        if rows:
            body.append("<table>" + "".join(rows) + "</table>")
            rows = []
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line:
            body.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    for dataset, paths in figures.items():
        body.append(f"<h2>{html.escape(dataset)}: figures</h2>")
        for p in paths:
            data = base64.b64encode(p.read_bytes()).decode()
            wide = " class='wide'" if p.name.startswith("f1_") else ""
            body.append(
                f'<img{wide} alt="{html.escape(p.stem)}" src="data:image/png;base64,{data}">'
            )
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}.paper{background:#eee;color:#555;font-style:italic}img{max-width:48%;margin:4px}img.wide{max-width:90%}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>CLEF reproduction</title><style>{style}</style></head><body>{''.join(body)}</body></html>"


def latest_report(reports_dir: Path, reproduction: str | None = None) -> Path:
    """The folder of a reproduction's report (the latest by default)."""
    from clef_core.common.errors import ClefError

    if reproduction is None:
        pointer = reports_dir / "latest"
        if not pointer.is_file():
            raise ClefError(
                f"no report in {reports_dir}: run `clef reproduce` (or `make demo`) first"
            )
        reproduction = pointer.read_text().strip()
    folder = reports_dir / reproduction
    if not (folder / "results.json").is_file():
        raise ClefError(f"no report {reproduction!r} in {reports_dir}")
    return folder


def rewrite(folder: Path) -> Path:
    """Re-render a report from its results.json (`clef report`)."""
    data = json.loads((folder / "results.json").read_text())
    runs = {name: [UnitResult(**r) for r in rs] for name, rs in data["runs"].items()}
    return write_report(runs, folder, data["synthetic"], data.get("zeroshot"), data.get("probes"))
