"""The results report and the closing tables: every F1 / accuracy beside the trivial
predictor's and a ROC-AUC, the paper's own per-AU and Table-6 figures beside ours, and every
table readable in an 80-column terminal without a number cut. Units are built from given
predictions (no training): meta.json + predictions.npz as stage 2 leaves them."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from rich.markdown import Markdown

from clef_core.common.results import UnitResult
from clef_core.method.labels import LabelSpace
from clef_core.method.steps import Predictions, metrics_of
from clef_core.tracking import paper
from clef_core.tracking.report import write_report

BP4D = LabelSpace.aus([1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24])
DISFA = LabelSpace.aus([1, 2, 4, 6, 9, 12, 25, 26])
RAFDB = LabelSpace.expressions(["surprise", "fear", "disgust", "happiness", "sadness", "anger",
                                "neutral"])  # fmt: skip


def _unit(
    tmp: Path, dataset: str, fold: int, space: LabelSpace, seed: int, init: str | None = None
) -> UnitResult:
    """A stage-2 unit whose scores carry some signal; the last AU has no positive frame."""
    rng = np.random.default_rng(seed)
    n = 300
    if space.kind == "au":
        targets = (rng.random((n, space.n)) < np.linspace(0.05, 0.6, space.n)).astype(np.int8)
        targets[:, -1] = 0
        scores = 1 / (1 + np.exp(-(rng.normal(size=targets.shape) + 1.5 * targets - 0.8)))
    else:
        targets = rng.integers(0, space.n, n)
        logits = rng.normal(size=(n, space.n)) + np.eye(space.n)[targets]
        scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = Predictions(scores, targets, rng.normal(size=(5, 8)))  # too few rows for a t-SNE
    checkpoint = tmp / f"s2-{dataset}-fold{fold}-{seed}-{init is not None}" / "checkpoint"
    checkpoint.mkdir(parents=True)
    meta = {"label_kind": space.kind, "labels": list(space.labels),
            "config": {"model": {"init_weights": init}}}  # fmt: skip
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    np.savez(checkpoint / "predictions.npz", scores=scores, targets=targets, features=pred.features)
    metrics = metrics_of(pred, space, 0.5, 6 if space.kind == "fer" else None)
    return UnitResult(f"s2-{dataset}-fold{fold}", 2, dataset, fold, "key", str(checkpoint), metrics)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    runs = {
        "PA+PI+N+D": [_unit(tmp, "bp4d", k, BP4D, k) for k in (1, 2, 3)]
        + [_unit(tmp, "disfa", 1, DISFA, 4), _unit(tmp, "rafdb", 1, RAFDB, 5)],
        "baseline": [_unit(tmp, "bp4d", 1, BP4D, 6)],
        "PI+N+D": [_unit(tmp, "bp4d", 1, BP4D, 7)],
    }
    return write_report(runs, tmp / "out", synthetic=True)


def _rows(markdown: str, first: str) -> list[list[str]]:
    """Cells of the data rows of the table whose header starts with `first`."""
    out, inside = [], False
    for line in markdown.splitlines():
        if line.startswith(f"| {first} |"):
            inside, out = True, []
        elif inside and line.startswith("|") and not line.startswith("|---"):
            out.append([c.strip().strip("*") for c in line.strip("|").split("|")])
        elif inside and not line.startswith("|"):
            return out
    return out


def test_au_rows_show_ours_always_present_auc_and_the_paper(report: Path) -> None:
    md = report.read_text()
    results = json.loads((report.parent / "results.json").read_text())["runs"]["PA+PI+N+D"]
    rows = _rows(md, "AU")  # the first AU table: bp4d, mean of folds 1-3
    assert [r[0] for r in rows] == [f"AU{a}" for a in BP4D.labels] + ["mean"]
    for row, au in zip(rows, BP4D.labels, strict=False):
        folds = [r["metrics"] for r in results if r["dataset"] == "bp4d"]
        assert row[2] == f"{100 * np.mean([m[f'f1_baseline_au{au}'] for m in folds]):.1f}"
        assert row[4] == f"{paper.AU_F1['bp4d'][au]:.1f}"  # the paper's Table 2, per AU
    assert rows[-2][3] == "n/a"  # AU24 has one held-out class: no AUC, not 0.50
    assert rows[-1][4] == "65.9"
    assert float(rows[0][3]) > 0.6  # the scores carry signal: AUC above chance
    disfa = md[md.index("## disfa") :]
    assert _rows(disfa, "AU")[0] == [
        "AU1",
        *_rows(disfa, "AU")[0][1:4],
        f"{paper.AU_F1['disfa'][1]:.1f}",
    ]
    fer = _rows(md, "dataset")[0]
    assert fer[0] == "rafdb" and fer[-1] == "90.09" and re.fullmatch(r"\d+\.\d\d", fer[3])


def test_table6_lists_the_papers_rows_with_ours_beside_the_same_components(
    report: Path,
) -> None:
    rows = _rows(report.read_text(), "method")
    assert [(r[0], float(r[6]), float(r[8])) for r in rows] == [
        (row.method, row.bp4d, row.rafdb) for row in paper.TABLE6
    ]
    ours = {i: r[7] for i, r in enumerate(rows) if r[7]}
    # baseline (I, from scratch) on the FaRL I row; PI+N+D and the full method on theirs.
    assert set(ours) == {3, 10, 11}
    assert rows[11][9] != "" and rows[3][9] == "-"  # RAF-DB ran with the full method only
    assert rows[3][10] == rows[11][10] == "scratch" and rows[0][10] == ""  # our start


def test_table6_holds_every_row_of_ours_by_name_with_its_initial_weights(
    tmp_path: Path,
) -> None:
    from clef_core.method.config import ABLATIONS

    runs = {name: [_unit(tmp_path, "bp4d", 1, BP4D, i)] for i, name in enumerate(ABLATIONS)}
    # Given weights files, a CLIP row names CLIP and a FaRL row FaRL (their config's file).
    runs["CLIP-I+N"] = [_unit(tmp_path, "bp4d", 1, BP4D, 20, "/w/openai-b16.pt")]
    runs["FaRL-I+N"] = [_unit(tmp_path, "bp4d", 1, BP4D, 21, "/w/weights.pt")]
    md = write_report(runs, tmp_path / "out", synthetic=True).read_text()
    rows = _rows(md, "method")
    assert len(paper.TABLE6) == 12 and len(rows) == len(ABLATIONS) == 12 + len(paper.OURS_ROWS)
    for row, name, theirs in zip(rows, ABLATIONS, (*paper.TABLE6, *paper.OURS_ROWS), strict=True):
        mean = runs[name][0].metrics["f1_mean"]
        assert row[0] == theirs.method and row[7] == f"{100 * mean:.1f}"  # ours beside theirs
        ticks = {c for c, cell in zip(paper.COMPONENTS, row[1:6], strict=True) if cell}
        assert ticks == theirs.components - {"SSL"} == paper.components_of(name) - {"SSL"}
    # Ours (SSL, SSL+N+D): no paper figure, after the paper's rows.
    assert [(r[0], r[6], r[8]) for r in rows[12:]] == [("SSL", "-", "-")] * 2
    assert [r[10] for r in rows] == [
        "scratch",
        "CLIP",
        "scratch",
        "scratch",
        "FaRL",
        *["scratch"] * 9,
    ]
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(Markdown(md))
    text = console.export_text()
    assert "…" not in text and max(map(len, text.splitlines())) <= 80


def test_terminal_rendering_fits_80_columns_without_cutting_a_number(report: Path) -> None:
    md = report.read_text()
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(Markdown(md))
    lines = console.export_text().splitlines()
    assert "…" not in "\n".join(lines) and max(map(len, lines)) <= 80
    data_rows = [
        [c.strip().strip("*") for c in line.strip("|").split("|")]
        for line in md.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]
    assert len(data_rows) > 50
    for cells in data_rows:  # a table row's cells, in order, on one terminal line
        wanted = [c for c in cells if c]
        if not re.search(r"\d", " ".join(wanted)):
            continue  # a header
        assert any(line.split() == " ".join(wanted).split() for line in lines), wanted


def test_html_marks_the_papers_columns_and_inlines_the_figures(report: Path) -> None:
    page = report.with_suffix(".html").read_text()
    assert page.count("<th class='paper'>") >= 5  # every table with paper figures
    assert "<td class='paper'>55.8</td>" in page
    assert page.count("data:image/png;base64") == 2  # the bp4d and disfa per-AU bars
    assert (report.parent / "bp4d" / "f1_mean_per_au.png").stat().st_size > 10_000


def test_closing_tables_fit_80_columns(report: Path) -> None:
    from flows.train import au_metrics_table, results_table

    results = [
        UnitResult(**r)
        for r in json.loads((report.parent / "results.json").read_text())["runs"]["PA+PI+N+D"]
    ]
    for r in results:
        r.metrics["train_loss"] = 12.345
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(results_table(results, "stage 2"))
    console.print(au_metrics_table(results[0].metrics, list(BP4D.labels), "bp4d fold 1"))
    text = console.export_text()
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    m = results[0].metrics
    for value in (m["f1_mean"], m["f1_baseline_mean"], m["f1_au1"], m["f1_baseline_au12"]):
        assert f"{100 * value:.1f}" in text
    assert f"{m['auc_mean']:.2f}" in text and f"{results[-1].metrics['auc_macro']:.2f}" in text
    assert "s2-disfa-fold1" in text and "12.345" in text
