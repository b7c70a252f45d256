"""The results report: tables laid out like the paper's (AU F1 per fold and AU with the mean,
FER accuracy, Table 6's ablation rows), our numbers beside the paper's, as markdown and an
HTML page with the per-AU bar charts and the t-SNE of stage-2 features (Figure 5).

Only the paper's mean figures are quoted (DESIGN.md); its per-AU cells are left as "-" rather
than copied from memory.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from clef_core import plots
from clef_core.checkpoint import label_space_of, read_meta
from clef_core.experiment import UnitResult, evaluation_artifacts, summarize
from clef_core.protocol import AU_FOLDS, PAPER

MAIN = "PA+PI+N+D"  # the full method's row in Table 6


def _pct(value: float | None) -> str:
    return "-" if value is None or np.isnan(value) else f"{100 * value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def au_table(dataset: str, results: list[UnitResult]) -> list[str]:
    """Rows: each fold, our mean over folds, the paper's mean; columns: AUs and the average."""
    results = sorted(results, key=lambda r: r.fold or 0)
    aus = sorted({int(k[5:]) for r in results for k in r.metrics if k.startswith("f1_au")})
    rows = [
        [f"fold {r.fold}", *[_pct(r.metrics.get(f"f1_au{a}")) for a in aus], _pct(r.metrics["f1_mean"])]
        for r in results
    ]  # fmt: skip
    mean = summarize(results)
    rows.append([f"**ours, mean of {len(results)} folds**", *[_pct(mean.get(f"f1_au{a}")) for a in aus],
                 f"**{_pct(mean['f1_mean'])}**"])  # fmt: skip
    rows.append(["CLEF (paper)", *["-" for _ in aus], f"{PAPER[dataset]:.1f}"])
    return _table(["", *[f"AU{a}" for a in aus], "Avg."], rows)


def fer_table(by_dataset: dict[str, list[UnitResult]]) -> list[str]:
    rows = [[d, _pct(summarize(rs)["accuracy"]), f"{PAPER[d]:.2f}"] for d, rs in by_dataset.items()]
    return _table(["dataset", "ours (accuracy %)", "CLEF paper"], rows)


def ablation_table(runs: dict[str, list[UnitResult]]) -> list[str]:
    """Table 6: each row an ablation, each column a dataset's mean F1 / accuracy."""
    datasets = sorted({r.dataset for rs in runs.values() for r in rs if r.stage == 2})
    rows = []
    for name, results in runs.items():
        cells = []
        for d in datasets:
            mean = summarize([r for r in results if r.stage == 2 and r.dataset == d])
            cells.append(_pct(mean.get("f1_mean", mean.get("accuracy"))))
        rows.append([name, *cells])
    return _table(["ablation", *datasets], rows)


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
        p for p in evaluation_artifacts(arrays, space, out / dataset, f"{dataset} fold {first.fold}", 0.5)
        if p.name == "tsne.png"
    ]  # fmt: skip
    if space.kind == "au":
        mean = summarize(results)
        per_au = {a: mean.get(f"f1_au{a}", float("nan")) for a in space.labels}
        figures.insert(
            0,
            plots.au_f1_bars(
                per_au, out / dataset / "f1_mean_per_au.png", f"{dataset}: mean over folds"
            ),
        )
    return figures


def write_report(runs: dict[str, list[UnitResult]], out: Path, synthetic: bool) -> Path:
    """report.md, report.html and results.json under `out`; returns report.md's path."""
    out.mkdir(parents=True, exist_ok=True)
    main = [r for r in runs[MAIN] if r.stage == 2]
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
    if len(runs) > 1:
        lines += ["## Ablations (Table 6)", "", *ablation_table(runs), ""]
    markdown = "\n".join(lines)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(_html(markdown, figures))
    dumped = {name: [asdict(r) for r in rs] for name, rs in runs.items()}
    (out / "results.json").write_text(
        json.dumps({"synthetic": synthetic, "runs": dumped}, indent=1)
    )
    (out.parent / "latest").write_text(out.name)
    return out / "report.md"


def _html(markdown: str, figures: dict[str, list[Path]]) -> str:
    """A self-contained page: the markdown's tables as HTML tables, figures inlined."""
    body: list[str] = []
    rows: list[str] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                cells = [html.escape(c.strip().strip("*")) for c in line.strip("|").split("|")]
                tag = "th" if not rows else "td"
                rows.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
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
            body.append(f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,{data}">')
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:48%;margin:4px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>CLEF reproduction</title><style>{style}</style></head><body>{''.join(body)}</body></html>"


def latest_report(reports_dir: Path, reproduction: str | None = None) -> Path:
    """The folder of a reproduction's report (the latest by default)."""
    from clef_core.errors import ClefError

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
    return write_report(runs, folder, synthetic=data["synthetic"])
