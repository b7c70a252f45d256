"""Benchmark: what stage 1 learns, by linear probes of its frozen image features (issue 28).

Stage 1 is trained in-process (`clef_core.training.local`: the Ray loop's steps, losses,
schedule and augmentation) in each pairing, with the same data, steps, batch and seed:

- `SSL`: instance pairing, the paper's Figure 1a (positives: the other view of the same image
  only; `stage1.pairing=instance`), images only;
- `PI`: activity pairing, images only (L_II, Eq. 1 with activity positives);
- `PA+PI`: activity pairing, images and activity texts (L_II + L_IA: the paper's stage 1);

and each is probed beside a random initialisation of the same architecture
(`clef_core.training.probe`: AU F1 / AUC and activity accuracy on held-out people, identity
accuracy on unseen tasks of the training people). Mean +- sd over seeds to `<out>/probes.md`,
`.json`, `.png` and one MLflow parent run (experiment `clef-probe`) with a nested run per row
and seed.

    .venv/bin/python -m bench.probes [--data-dir data] [--seeds 0 1 2] [--corpus bp4d_plus]
        [--set stage1.steps_per_epoch=300]

Shards: those of `<data-dir>/shards` (the demo's; `--corpus bp4d_plus` needs its shards too).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.common import Parent

# Stage 1 in each pairing (config overrides); "random" is no stage 1 at all.
ROWS: dict[str, tuple[str, ...]] = {
    "random": (),
    "SSL": ("stage1.pairing=instance", "stage1.weight_image_activity=0"),
    "PI": ("stage1.weight_image_activity=0",),
    "PA+PI": (),
}
KEYS = ("au_f1", "au_f1_always", "au_f1_activity", "au_auc", "activity_acc",
        "activity_majority", "identity_acc", "identity_majority")  # fmt: skip


def run_row(row: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train `row`'s stage 1 (none for "random") with `seed` and probe it on BP4D's fold."""
    from clef_core.method.config import load_config
    from clef_core.training.local import run_local_stage
    from clef_core.training.probe import RANDOM, model_to_probe, probe
    from clef_core.training.protocol import Unit

    sets = [*ROWS[row], f"seed={seed}", f"data.data_dir={args.data_dir}", *args.sets]
    cfg = load_config(args.preset, sets)
    unit = Unit(2, "bp4d", args.fold)
    assert unit.train_parts is not None and unit.test_parts is not None
    if row == "random":
        model = model_to_probe(RANDOM, cfg)
    else:  # the protocol's stage 1 reads the fold's training people; a corpus reads all of it
        parts = unit.train_parts if args.corpus == "bp4d" else None
        model = run_local_stage(cfg, 1, args.corpus, parts).model
    return probe(cfg, row, "bp4d", args.fold, model=model).as_dict()


def summarise(scores: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per model: each figure's mean over seeds and its sd (`<key>_sd`, ddof 1)."""
    rows = []
    for row, runs in scores.items():
        out: dict[str, Any] = {"label": row, "model": row, "dataset": "bp4d",
                               "fold": runs[0]["fold"], "seeds": len(runs)}  # fmt: skip
        for k in KEYS:  # NaN: a figure an older run's probes.json lacks (au_f1_activity)
            out[k], out[f"{k}_sd"] = common.mean_sd([float(r.get(k, "nan")) for r in runs])
        rows.append(out)
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, wall: float) -> str:
    def mean(r: dict[str, Any], k: str) -> str:
        scale, digits = (1, 3) if k == "au_auc" else (100, 1)  # AUC as a fraction
        return common.pm(scale * r[k], scale * r[f"{k}_sd"], digits)

    # Rows combined from runs apart can have run different seeds: n says how many each has.
    caption = (
        f"Synthetic BP4D fold {args.fold}, {args.preset}, stage 1 on {args.corpus}, seeds "
        f"{', '.join(map(str, args.seeds))} (mean +- sd over a row's n seeds, %; "
        f"{wall / 60:.0f} min)"
    )
    header = ["stage 1", "n", "AU F1", "always", "activity only", "AU AUC", "activity",
              "largest", "identity", "largest"]  # fmt: skip
    lines = [
        [r["label"], str(r["seeds"]), mean(r, "au_f1"), f"{100 * r['au_f1_always']:.1f}",
         f"{100 * r['au_f1_activity']:.1f}", mean(r, "au_auc"),
         mean(r, "activity_acc"), f"{100 * r['activity_majority']:.1f}",
         mean(r, "identity_acc"), f"{100 * r['identity_majority']:.1f}"]
        for r in rows
    ]  # fmt: skip
    return common.table(caption, header, lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = common.parser(__doc__, ".bench/probes")
    p.add_argument("--preset", default="cpu-tiny")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--corpus", default="bp4d", choices=["bp4d", "bp4d_plus"],
                   help="stage 1's data: BP4D's training people, or all of BP4D+")  # fmt: skip
    p.add_argument("--combine", type=Path, nargs="+", default=None, metavar="DIR",
                   help="train nothing: merge the probes.json of earlier runs (e.g. one "
                   "seed each, run side by side) into --out")  # fmt: skip
    return p.parse_args(argv)


def write(scores: dict[str, list[dict[str, Any]]], args: argparse.Namespace, wall: float) -> list[dict[str, Any]]:  # fmt: skip
    """The summary over seeds: probes.md, probes.json and probes.png in `args.out`."""
    from clef_core.tracking.plots import probe_bars

    rows = summarise(scores)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probes.md").write_text(markdown(rows, args, wall))
    (args.out / "probes.json").write_text(
        json.dumps({"rows": rows, "runs": scores, "seeds": args.seeds, "wall_s": wall}, indent=1)
    )
    title = f"Linear probes after stage 1 on {args.corpus}, mean +- sd over seeds {args.seeds}"
    probe_bars(rows, args.out / "probes.png", title)
    return rows


def combine(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Merge earlier runs' results (their probes.json: rows in seed order) into one summary."""
    scores, data = common.read_merged([folder / "probes.json" for folder in args.combine], "runs")
    args.seeds = sorted({seed for d in data for seed in d.get("seeds", [])})  # rows differ
    wall = sum(d.get("wall_s", 0.0) for d in data)
    return write({r: scores[r] for r in ROWS if r in scores}, args, wall)


def run_jobs(args: argparse.Namespace, parent: Parent, console: Any) -> dict[str, list[dict]]:
    """Every row with every seed (a seed's rows together): its probe figures, a nested run
    each."""
    from rich.progress import Progress

    scores: dict[str, list[dict[str, Any]]] = {r: [] for r in args.rows}
    jobs = [(seed, row) for seed in args.seeds for row in args.rows]
    with Progress(console=console) as progress:
        bar = progress.add_task("probes", total=len(jobs))
        for seed, row in jobs:
            progress.update(bar, description=f"{row} seed {seed}")
            t0 = time.perf_counter()
            s = run_row(row, seed, args)
            parent.nested(f"{row}-seed{seed}", {}, {"seed": seed}, {k: float(s[k]) for k in KEYS})
            scores[row].append(s)
            progress.console.print(
                f"{row:7s} seed {seed}: AU F1 {100 * s['au_f1']:.1f} (always "
                f"{100 * s['au_f1_always']:.1f}, activity only {100 * s['au_f1_activity']:.1f}) "
                f"AUC {s['au_auc']:.3f} activity "
                f"{100 * s['activity_acc']:.1f} identity {100 * s['identity_acc']:.1f}  "
                f"{time.perf_counter() - t0:.0f} s"
            )
            progress.advance(bar)
    return scores


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = common.entry(parse, argv)
    if args.combine:
        rows = combine(args)
        print((args.out / "probes.md").read_text())
        return rows
    from rich.console import Console

    console = Console()
    common.prepare(args)
    parent = Parent(args, "clef-probe", "probes")
    parent.log_params({"args": json.dumps({k: str(v) for k, v in vars(args).items()})})
    start = time.perf_counter()
    with parent.running():
        scores = run_jobs(args, parent, console)
        rows = write(scores, args, time.perf_counter() - start)
        parent.log_artifacts(args.out, ("probes.md", "probes.json", "probes.png"))
    console.print((args.out / "probes.md").read_text())
    return rows


if __name__ == "__main__":
    main()
