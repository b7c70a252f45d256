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

    .venv/bin/python bench/ablation.py [--data-dir data] [--seeds 0 1 2] [--set stage2.steps_per_epoch=400]

Shards: those of `<data-dir>/shards/bp4d` (the demo's); missing, they are made from
`<data-dir>/synthetic` (generated with the demo preset when absent).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from clef_core.method.config import ABLATIONS, ablation_name

DEFAULT_ROWS = ["FaRL-I", "FaRL-I+N+D", "PI+N+D", "PA+PI+N+D"]


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


def ensure_shards(data_dir: Path) -> Path:
    """The BP4D shards under data_dir (made in-process from the synthetic data if absent)."""
    shards = data_dir / "shards"
    if (shards / "bp4d" / "manifest.json").is_file():
        return shards
    from preprocessing.pipeline import PreprocessOptions, finish, plan, process_sequence
    from synthetic.generate import generate
    from synthetic.spec import make_spec

    synth = data_dir / "synthetic"
    if not (synth / "BP4D").is_dir():
        generate(make_spec(synth, "demo", datasets=("bp4d",)), show_progress=True)
    opts = PreprocessOptions("bp4d", synth / "BP4D", shards)
    sequences, issues = plan(opts)
    finish(opts, [process_sequence(opts, s) for s in sequences], issues)
    return shards


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


def mean_sd(values: list[float]) -> tuple[float, float]:
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return float(np.mean(values)), sd


def _pm(mean: float, sd: float, digits: int) -> str:
    """The mean and its sd over seeds (one seed has no sd: its mean alone)."""
    text = f"{mean:.{digits}f}"
    return text if math.isnan(sd) else f"{text} +- {sd:.{digits}f}"


def markdown(
    summary: dict[str, dict[str, tuple[float, float]]], seeds: list[int], wall: float
) -> str:
    lines = [
        f"Synthetic BP4D fold 1, cpu-tiny, seeds {', '.join(map(str, seeds))} "
        f"(mean +- sd over seeds; F1 at threshold 0.5; {wall / 60:.0f} min on this machine)",
        "",
        "| row | stage 1 | head | mean F1 | mean AUC | always-present F1 |",
        "|---|---|---|---|---|---|",
    ]
    what = {row: describe(row) for row in summary}
    for row, s in summary.items():
        f1, auc, base = s["f1"], s["auc"], s["always_f1"]
        lines.append(
            f"| {row} | {what[row][0]} | {what[row][1]} | {_pm(100 * f1[0], 100 * f1[1], 1)} "
            f"| {_pm(auc[0], auc[1], 3)} | {100 * base[0]:.1f} |"
        )
    return "\n".join(lines) + "\n"


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
        ax.set_xticks(x, rows, fontsize=8)
    fig.suptitle(
        "Table 6 rows on synthetic BP4D fold 1 (cpu-tiny, mean +- sd over seeds)", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    from clef_core.common.runtime import configure_process

    configure_process()  # an entry point: the service environment, as `clef` sets it
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, type=row_name,
                        metavar="ROW", help=f"Table 6 rows: {', '.join(ABLATIONS)}")  # fmt: skip
    parser.add_argument("--fold", type=int, default=1, choices=[1, 2, 3])
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path(".bench/ablation"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mlflow-uri", default=None, help="default: SQLite in the data dir")
    args = parser.parse_args()

    import torch
    from mlflow import MlflowClient
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from clef_core.common.runtime import default_tracking_uri, use_data_dir
    from flows.console import print_table

    torch.set_num_threads(args.threads)
    console = Console()
    data_dir = use_data_dir(args.data_dir)
    ensure_shards(data_dir)
    uri = args.mlflow_uri or default_tracking_uri(data_dir)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("clef-ablation")
    exp_id = exp.experiment_id if exp else client.create_experiment("clef-ablation")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parent = client.create_run(exp_id, run_name=f"ablation-{stamp}").info.run_id
    client.log_param(parent, "seeds", json.dumps(args.seeds))
    client.log_param(parent, "overrides", json.dumps(args.sets))
    client.log_param(parent, "fold", args.fold)
    start = time.perf_counter()
    scores: dict[str, list[dict[str, float]]] = {r: [] for r in args.rows}
    jobs = [(seed, row) for seed in args.seeds for row in args.rows]  # a seed's rows together
    try:
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console,
        ) as progress:  # fmt: skip
            bar = progress.add_task("ablation", total=len(jobs))
            for seed, row in jobs:
                progress.update(bar, description=f"{row} seed {seed}")
                run = client.create_run(
                    exp_id, run_name=f"{row}-seed{seed}",
                    tags={"mlflow.parentRunId": parent, "clef.ablation": row},
                )  # fmt: skip
                t0 = time.perf_counter()
                s = run_row(row, seed, data_dir, args.sets, args.fold)
                s["seconds"] = time.perf_counter() - t0
                client.log_param(run.info.run_id, "seed", seed)
                for k, v in s.items():
                    client.log_metric(run.info.run_id, k, v)
                client.set_terminated(run.info.run_id)
                scores[row].append(s)
                progress.console.print(
                    f"{row:10s} seed {seed}: F1 {100 * s['f1']:.1f} (always {100 * s['always_f1']:.1f})"
                    f" AUC {s['auc']:.3f}  {s['seconds']:.0f} s"
                )
                progress.advance(bar)
        wall = time.perf_counter() - start
        summary = {
            row: {k: mean_sd([s[k] for s in runs]) for k in ("f1", "auc", "always_f1")}
            for row, runs in scores.items()
        }
        for row, stats in summary.items():
            label = row.replace("+", "_")  # MLflow metric names: no "+"
            for k, (m, sd) in stats.items():
                client.log_metric(parent, f"{k}_{label}", m)
                if not math.isnan(sd):
                    client.log_metric(parent, f"{k}_sd_{label}", sd)
        client.log_metric(parent, "wall_seconds", wall)
        table = markdown(summary, args.seeds, wall)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ablation.md").write_text(table)
        (args.out / "ablation.json").write_text(
            json.dumps({"scores": scores, "wall_s": wall}, indent=1)
        )
        plot(summary, args.out / "ablation.png")
        for file in ("ablation.md", "ablation.png", "ablation.json"):
            client.log_artifact(parent, str(args.out / file))
    except BaseException:
        client.set_terminated(parent, "FAILED")
        raise
    client.set_terminated(parent)
    print_table(console, Markdown(table))
    console.print(
        f"{args.out / 'ablation.md'}, {args.out / 'ablation.png'}; MLflow {uri} run {parent}"
    )


if __name__ == "__main__":
    main()
