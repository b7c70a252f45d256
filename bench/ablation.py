"""Benchmark: the paper's Table 6 on the synthetic BP4D, fold 1, with the cpu-tiny model.

Rows: any of `clef_core.method.config.ABLATIONS` (the paper's Table 6 by name, the same names as
`clef reproduce --ablation`); by default FaRL-I (no stage 1, linear head), FaRL-I+N+D (no
stage 1; label names and descriptions), PI+N+D (stage 1 without the activity text) and
PA+PI+N+D (the full method). cpu-tiny has no initial weights, so every row starts from
scratch (a CLIP row is then its FaRL row's training). Each row is trained with several seeds in this process
(`clef_core.training.local`: the same steps, losses and schedule as the Ray Train loop, without a
worker group's start-up per run) and scored on the held-out part: mean AU F1 at the fixed
0.5 threshold, mean per-AU ROC-AUC, and the F1 of predicting every AU present. Written to
MLflow (one parent run, a nested run per row and seed) and to `<out>/ablation.md` + `.png`.

    .venv/bin/python -m bench.ablation [--data-dir data] [--seeds 0 1 2] [--set stage2.steps_per_epoch=400]

Shards: those of `<data-dir>/shards/bp4d` (the demo's); missing, they are made from
`<data-dir>/synthetic` (generated with the demo preset when absent).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import common
from bench.common import Parent
from clef_core.method.config import ABLATIONS, ablation_name

DEFAULT_ROWS = ["FaRL-I", "FaRL-I+N+D", "PI+N+D", "PA+PI+N+D"]
METRICS = ("f1", "auc", "always_f1")


def row_name(text: str) -> str:
    """--rows' type: the canonical row name, or argparse's one-line error."""
    try:
        return ablation_name(text)
    except Exception as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def describe(row: str) -> tuple[str, str]:
    """The row's stage 1 (its losses) and stage-2 head, from its components."""
    from clef_core.tracking import paper

    comps = paper.components_of(row)
    stage1 = "L_II + L_IA" if "PA" in comps else "L_II" if "PI" in comps else "-"
    if "SSL" in comps:  # ours: stage 1 with instance pairing (the paper's Figure 1a)
        stage1 = "L_II, instance pairing"
    head = "names + descriptions" if "D" in comps else "names" if "N" in comps else "linear"
    return stage1, head


def run_row(row: str, seed: int, data_dir: Path, sets: list[str], fold: int) -> dict[str, float]:
    """Train one row with one seed; its held-out scores (clef_core.training.local.heldout_scores)."""
    from clef_core.method.config import ablation_overrides, load_config
    from clef_core.training.local import heldout_scores, run_local_stage

    overrides = [*ablation_overrides(row), f"seed={seed}", f"data.data_dir={data_dir}"]
    cfg = load_config("cpu-tiny", [*overrides, *sets])
    train = tuple(p for p in range(3) if p != fold - 1)
    init = None
    if cfg.stage1.epochs > 0:
        init = run_local_stage(cfg, 1, "bp4d", train).model
    result = run_local_stage(cfg, 2, "bp4d", train, (fold - 1,), init=init)
    assert result.predictions is not None
    return heldout_scores(result.predictions)


def markdown(
    summary: dict[str, dict[str, tuple[float, float]]], seeds: list[int], wall: float
) -> str:
    caption = (
        f"Synthetic BP4D fold 1, cpu-tiny, seeds {', '.join(map(str, seeds))} "
        f"(mean +- sd over seeds; F1 at threshold 0.5; {wall / 60:.0f} min on this machine)"
    )
    header = ["row", "stage 1", "head", "mean F1", "mean AUC", "always-present F1"]
    rows = []
    for row, s in summary.items():
        f1, auc, base = s["f1"], s["auc"], s["always_f1"]
        stage1, head = describe(row)
        f1_text = common.pm(100 * f1[0], 100 * f1[1], 1)
        rows.append(
            [row, stage1, head, f1_text, common.pm(auc[0], auc[1], 3), f"{100 * base[0]:.1f}"]
        )
    return common.table(caption, header, rows)


def plot(summary: dict[str, dict[str, tuple[float, float]]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(summary)
    x = np.arange(len(rows))
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.4))
    f1 = [100 * summary[r]["f1"][0] for r in rows]
    f1_sd = [100 * summary[r]["f1"][1] for r in rows]
    a.bar(x, f1, yerr=f1_sd, capsize=4, color="tab:blue")
    base = 100 * summary[rows[0]]["always_f1"][0]
    a.axhline(base, color="k", ls="--", lw=1, label=f"always present ({base:.1f})")
    a.set_ylabel("held-out mean AU F1 (%)")
    a.legend(fontsize=7, loc="lower right")
    auc = [summary[r]["auc"][0] for r in rows]
    auc_sd = [summary[r]["auc"][1] for r in rows]
    b.bar(x, auc, yerr=auc_sd, capsize=4, color="tab:orange")
    b.axhline(0.5, color="k", ls="--", lw=1, label="chance (0.5)")
    b.set_ylim(0.4, max(0.8, max(auc) + 0.05))
    b.set_ylabel("held-out mean ROC-AUC")
    b.legend(fontsize=7, loc="lower right")
    for ax in (a, b):
        ax.set_xticks(x, rows, fontsize=8, rotation=25, ha="right")  # long names: no overlap
    fig.suptitle(
        "Table 6 rows on synthetic BP4D fold 1 (cpu-tiny, mean +- sd over seeds)", fontsize=9
    )
    return common.save_figure(fig, path, 110)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = common.parser(__doc__, ".bench/ablation")
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, type=row_name, metavar="ROW",
                   help=f"Table 6 rows: {', '.join(ABLATIONS)}")  # fmt: skip
    return p.parse_args(argv)


def run_jobs(args: argparse.Namespace, parent: Parent, console: Any) -> dict[str, list[dict]]:
    """Every row with every seed (a seed's rows together): its scores, a nested run each."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    scores: dict[str, list[dict[str, float]]] = {r: [] for r in args.rows}
    jobs = [(seed, row) for seed in args.seeds for row in args.rows]
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        bar = progress.add_task("ablation", total=len(jobs))
        for seed, row in jobs:
            progress.update(bar, description=f"{row} seed {seed}")
            run_id = parent.start_nested(f"{row}-seed{seed}", {"clef.ablation": row})
            t0 = time.perf_counter()
            s = run_row(row, seed, args.data_dir, args.sets, args.fold)
            s["seconds"] = time.perf_counter() - t0
            parent.end_nested(run_id, {"seed": seed}, s)
            scores[row].append(s)
            progress.console.print(
                f"{row:10s} seed {seed}: F1 {100 * s['f1']:.1f} (always {100 * s['always_f1']:.1f})"
                f" AUC {s['auc']:.3f}  {s['seconds']:.0f} s"
            )
            progress.advance(bar)
    return scores


def summarize(scores: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, tuple]]:
    """Row -> metric -> (mean, sd over seeds)."""
    return {
        row: {k: common.mean_sd([s[k] for s in runs]) for k in METRICS}
        for row, runs in scores.items()
    }


def log_summary(parent: Parent, summary: dict[str, dict[str, tuple]], wall: float) -> None:
    """Each row's means (and sds, with more than one seed) and the wall time, on the parent."""
    for row, stats in summary.items():
        label = row.replace("+", "_")  # MLflow metric names: no "+"
        for k, (m, sd) in stats.items():
            parent.log_metric(f"{k}_{label}", m)
            if not math.isnan(sd):
                parent.log_metric(f"{k}_sd_{label}", sd)
    parent.log_metric("wall_seconds", wall)


def write_outputs(
    args: argparse.Namespace, scores: dict, summary: dict[str, dict[str, tuple]], wall: float
) -> str:
    """ablation.md (the table, returned), .json (every run) and .png (the plot) in --out."""
    text = markdown(summary, args.seeds, wall)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.md").write_text(text)
    (args.out / "ablation.json").write_text(
        json.dumps({"scores": scores, "wall_s": wall}, indent=1)
    )
    plot(summary, args.out / "ablation.png")
    return text


def main(argv: list[str] | None = None) -> None:
    args = common.entry(parse, argv)
    from rich.console import Console
    from rich.markdown import Markdown

    from flows.console import print_table

    console = Console()
    common.prepare(args)
    common.ensure_shards(args.data_dir)
    parent = Parent(args, "clef-ablation", "ablation")
    overrides = json.dumps(args.sets)
    parent.log_params({"seeds": json.dumps(args.seeds), "overrides": overrides, "fold": args.fold})
    start = time.perf_counter()
    with parent.running():
        scores = run_jobs(args, parent, console)
        wall = time.perf_counter() - start
        summary = summarize(scores)
        log_summary(parent, summary, wall)
        text = write_outputs(args, scores, summary, wall)
        parent.log_artifacts(args.out, ("ablation.md", "ablation.png", "ablation.json"))
    print_table(console, Markdown(text))
    console.print(
        f"{args.out / 'ablation.md'}, {args.out / 'ablation.png'}; MLflow {parent.uri} run "
        f"{parent.run_id}"
    )


if __name__ == "__main__":
    main()
