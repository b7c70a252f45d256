"""Benchmark: label efficiency on the synthetic BP4D, fold 1, with the cpu-tiny model.

Issue #28's question: does stage 1 (no AU labels) help most when AU labels are scarce? Rows:
PA+PI+N+D (stage 1, then stage 2) and FaRL-I+N+D (stage 2 only), each with a fraction of the
training subjects' AU labels (`stage2.label_fraction`, ours: a fraction of the SUBJECTS, the
rest of the training subjects' rows dropped from stage 2; default 0.1, 0.25, 1.0) and several
seeds (the seed also draws which subjects: `stage2.label_seed` = seed). cpu-tiny has no initial
weights, so both rows start from scratch, the same initialisation.

Parity (ours): the row without stage 1 trains stage 2 for the full method's stage-2 steps plus
its stage-1 steps, so both rows take the same total optimiser steps and neither wins by
training longer. Stage 1 is trained once per seed (it reads no AU labels, so the fraction
does not touch it) on what the protocol's BP4D stage 1 reads: the coded frames of the training
parts (`clef_core.training.selection`), and its model starts every fraction's stage 2.

In-process (`clef_core.training.local.run_local_stage`, as `bench.ablation`; the helpers they
share are `bench.common`'s); scored on the held-out part: mean AU F1 at 0.5, mean per-AU
ROC-AUC, and the F1 of predicting every AU present. Written to MLflow (one parent run, a nested run per row,
fraction and seed) and to `<out>/label_efficiency.md`, `.json` and `.png`.

    .venv/bin/python -m bench.label_efficiency [--data-dir data] [--seeds 0 1 2] \
        [--fractions 0.1 0.25 1] [--set stage2.steps_per_epoch=300]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.common import Parent

ROWS = ("PA+PI+N+D", "FaRL-I+N+D")  # with stage 1 first: its steps set the other's
METRICS = ("f1", "auc", "always_f1")


def _fraction(text: str) -> float:
    """--fractions' type: a float in (0, 1], or argparse's one-line error."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a label fraction is in (0, 1], got {text}")
    return value


class Bench:
    """One seed's runs: the shared data, stage 1 once, then each row at each fraction."""

    def __init__(self, data_dir: Path, sets: list[str], fold: int, corpus: str = "bp4d"):
        from clef_core.method.labels import shard_label_space
        from clef_core.training.cache import decoded_arrays, source_size

        self.data_dir, self.sets, self.corpus = data_dir, sets, corpus
        self.train = tuple(p for p in range(3) if p != fold - 1)
        self.test = (fold - 1,)
        cfg = self.config("PA+PI+N+D", 0, 1.0)
        side = source_size(cfg.model.image_size, cfg.stage1.augment, cfg.stage2.augment)
        self.arrays = decoded_arrays(cfg.data.shard_dir, "bp4d", side)  # once for every run
        # Stage 1's rows: BP4D's training parts, or all of a larger unlabelled corpus (BP4D+,
        # other people: the paper's regime), decoded once for every seed.
        self.corpus_arrays = (
            self.arrays if corpus == "bp4d" else decoded_arrays(cfg.data.shard_dir, corpus, side)
        )
        self.space = shard_label_space(cfg.data.shard_dir, "bp4d")
        self.stage1: Any = None  # the seed's stage-1 model
        self.stage1_steps = 0

    def config(self, row: str, seed: int, fraction: float, extra: tuple[str, ...] = ()) -> Any:
        """The row's config at this seed and label fraction (the seed also picks the subjects)."""
        from clef_core.method.config import ablation_overrides, load_config

        overrides = [
            *ablation_overrides(row), f"seed={seed}", f"data.data_dir={self.data_dir}",
            f"stage2.label_fraction={fraction}", f"stage2.label_seed={seed}",
        ]  # fmt: skip
        return load_config("cpu-tiny", [*overrides, *self.sets, *extra])

    def pretrain(self, seed: int) -> float:
        """Stage 1 of the full method with this seed (no AU labels: one for every fraction)."""
        from clef_core.training.local import run_local_stage

        t0 = time.perf_counter()
        cfg = self.config("PA+PI+N+D", seed, 1.0)
        parts = self.train if self.corpus == "bp4d" else None
        s1 = run_local_stage(cfg, 1, self.corpus, parts, arrays=self.corpus_arrays)
        self.stage1, self.stage1_steps = s1.model, len(s1.losses)
        return time.perf_counter() - t0

    def finetune(self, row: str, seed: int, fraction: float, steps: int | None) -> dict[str, Any]:
        """Stage 2 of `row`; `steps`: its total stage-2 steps (parity), None = the config's."""
        import math

        from clef_core.training.local import heldout_scores, run_local_stage
        from clef_core.training.stages import StageJob, plan_stage

        cfg = self.config(row, seed, fraction)
        if steps is not None:
            per_epoch = math.ceil(steps / cfg.stage2.epochs)
            cfg = self.config(row, seed, fraction, (f"stage2.steps_per_epoch={per_epoch}",))
        job = StageJob(2, ("bp4d",), self.train, self.test)
        plan = plan_stage(cfg, job, self.arrays, self.space)
        init = self.stage1 if cfg.stage1.epochs > 0 else None
        t0 = time.perf_counter()
        result = run_local_stage(
            cfg, 2, "bp4d", self.train, self.test, init, arrays=self.arrays, space=self.space
        )
        assert result.predictions is not None
        scores: dict[str, Any] = dict(heldout_scores(result.predictions))
        stage1 = self.stage1_steps if init is not None else 0
        scores |= {
            "seconds": time.perf_counter() - t0, "stage2_steps": len(result.losses),
            "stage1_steps": stage1, "total_steps": stage1 + len(result.losses),
            "rows": plan.rows, "subjects": list(plan.train[0].subjects or []),
        }  # fmt: skip
        return scores


def summarize(scores: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Row -> fraction -> metric -> (mean, sd over seeds), and n (the seeds)."""
    return {
        row: {
            frac: {**{k: common.mean_sd([r[k] for r in runs]) for k in METRICS}, "n": len(runs)}
            for frac, runs in by_fraction.items()
        }
        for row, by_fraction in scores.items()
    }


def markdown(
    summary: dict[str, Any], seeds: list[int], wall: float, steps: str, corpus: str = "bp4d"
) -> str:
    """The table: row x fraction, mean +- sd F1 and AUC over seeds, always-present F1, n."""
    where = "BP4D's training parts" if corpus == "bp4d" else f"all of {corpus}"
    caption = (
        f"Synthetic BP4D fold 1, stage 1 on {where}, cpu-tiny, seeds "
        f"{', '.join(map(str, seeds))} (mean +- sd over "
        f"seeds; F1 at threshold 0.5; {steps}; {wall / 60:.0f} min on this machine)"
    )
    header = ["row", "label fraction (subjects)", "mean F1", "mean AUC", "always-present F1", "n"]
    rows = [
        [row, f"{float(frac):g}", common.pm(100 * s["f1"][0], 100 * s["f1"][1], 1),
         common.pm(s["auc"][0], s["auc"][1], 3), f"{100 * s['always_f1'][0]:.1f}", s["n"]]
        for row, by_fraction in summary.items()
        for frac, s in by_fraction.items()
    ]  # fmt: skip
    return common.table(caption, header, rows)


def plot(
    scores: dict[str, dict[str, list[dict[str, Any]]]],
    summary: dict[str, Any],
    path: Path,
    corpus: str = "bp4d",
) -> Path:
    """F1 against label fraction: each row's mean with sd bars and its seeds' points; the
    always-present F1 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for (row, by_fraction), colour in zip(
        summary.items(), ("tab:blue", "tab:orange"), strict=False
    ):
        x = np.array([float(f) for f in by_fraction])
        mean = [100 * s["f1"][0] for s in by_fraction.values()]
        sd = [100 * np.nan_to_num(s["f1"][1]) for s in by_fraction.values()]
        ax.errorbar(
            x, mean, yerr=sd, marker="o", capsize=4, color=colour, label=f"{row} (mean +- sd)"
        )
        for frac, runs in scores[row].items():
            ax.scatter([float(frac)] * len(runs), [100 * r["f1"] for r in runs], s=12,
                       color=colour, alpha=0.45)  # fmt: skip
    first = next(iter(summary.values()))
    base = 100 * next(iter(first.values()))["always_f1"][0]
    ax.axhline(base, color="k", ls="--", lw=1, label=f"always present ({base:.1f})")
    ax.set_xscale("log")
    ticks = sorted({float(f) for by in summary.values() for f in by})
    ax.set_xticks(ticks, [f"{100 * t:g}%" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training subjects with AU labels")
    ax.set_ylabel("held-out mean AU F1 (%)")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"Label efficiency, synthetic BP4D fold 1\nstage 1 on {corpus} (cpu-tiny; "
                 "points: seeds)", fontsize=9)  # fmt: skip
    return common.save_figure(fig, path, 120)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = common.parser(__doc__, ".bench/label_efficiency")
    p.add_argument("--fractions", type=_fraction, nargs="+", default=[0.1, 0.25, 1.0])
    p.add_argument("--corpus", default="bp4d", choices=["bp4d", "bp4d_plus"],
                   help="stage 1's data: BP4D's training parts, or all of the (larger, "
                   "unlabelled for stage 1) BP4D+; its shards must be in <data-dir>/shards")  # fmt: skip
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                   help="no training: one table of these runs' label_efficiency.json "
                   "(e.g. one process per seed)")  # fmt: skip
    return p.parse_args(argv)


def merge(args: argparse.Namespace) -> Path:
    """One table, JSON and plot of several runs' JSON (seeds run in separate processes)."""
    scores, data = common.read_merged(args.merge, "scores")  # a partial run's empty fractions: none
    wall = max([0.0, *(d["wall_s"] for d in data)])  # run side by side: the longest
    args.seeds = sorted({r["seed"] for by in scores.values() for rs in by.values() for r in rs})
    args.out.mkdir(parents=True, exist_ok=True)
    write_outputs(args, scores, wall)
    print((args.out / "label_efficiency.md").read_text())
    return args.out


def run_all(args: argparse.Namespace, log: Any, nested: Any) -> dict[str, dict[str, list]]:
    """Every seed: stage 1 once, then each fraction's rows (the full method first: the
    other's stage-2 steps are its stage-2 plus stage-1 steps). `nested(name, tags, scores)`
    records one run; `log(text)` prints. Every run's scores go to `<out>/label_efficiency.json`
    as they come (marked partial): a run cut short still leaves them for `--merge`."""
    bench = Bench(args.data_dir, args.sets, args.fold, args.corpus)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    fracs = [f"{f:g}" for f in args.fractions]
    scores: dict[str, dict[str, list]] = {r: {f: [] for f in fracs} for r in ROWS}
    for seed in args.seeds:
        seconds = bench.pretrain(seed)
        log(f"seed {seed}: stage 1, {bench.stage1_steps} steps, {seconds:.0f} s")
        for frac in fracs:
            steps = None
            for row in ROWS:
                s = bench.finetune(row, seed, float(frac), steps)
                s["stage1_seconds"] = seconds if s["stage1_steps"] else 0.0
                steps = s["stage2_steps"] + s["stage1_steps"]  # the next row's: parity
                scores[row][frac].append(s | {"seed": seed})
                nested(f"{row}-f{frac}-seed{seed}", {"clef.row": row, "clef.fraction": frac}, s)
                partial = {"scores": scores, "wall_s": time.perf_counter() - start, "partial": True}
                (args.out / "label_efficiency.json").write_text(json.dumps(partial, indent=1))
                log(
                    f"{row:10s} fraction {frac:>4s} seed {seed}: F1 {100 * s['f1']:.1f} "
                    f"(always {100 * s['always_f1']:.1f}) AUC {s['auc']:.3f}, "
                    f"{len(s['subjects']) or 'all'} subjects, {s['rows']} rows, "
                    f"{s['total_steps']} steps, {s['seconds']:.0f} s"
                )
    return scores


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark; the folder its table, JSON and plot are in."""
    args = common.entry(parse, argv)
    if args.merge:
        return merge(args)
    common.prepare(args)
    common.ensure_shards(args.data_dir)
    parent = Parent(args, "clef-label-efficiency", "label-efficiency")
    parent.log_params({key: json.dumps(value) for key, value in (
        ("seeds", args.seeds), ("fractions", args.fractions), ("overrides", args.sets)
    )} | {"fold": args.fold})  # fmt: skip

    def nested(name: str, tags: dict[str, str], s: dict[str, Any]) -> None:
        metrics = {k: float(v) for k, v in s.items() if isinstance(v, (int, float))}
        parent.nested(name, tags, {"subjects": ",".join(s["subjects"]) or "all"}, metrics)

    start = time.perf_counter()
    with parent.running():
        scores = run_all(args, lambda text: print(text, flush=True), nested)
        wall = time.perf_counter() - start
        args.out.mkdir(parents=True, exist_ok=True)
        write_outputs(args, scores, wall)
        names = ("label_efficiency.md", "label_efficiency.json", "label_efficiency.png")
        parent.log_artifacts(args.out, names)
        parent.log_metric("wall_seconds", wall)
    print((args.out / "label_efficiency.md").read_text())
    print(f"{args.out}; MLflow {parent.uri} run {parent.run_id}")
    return args.out


def write_outputs(
    args: argparse.Namespace, scores: dict[str, dict[str, list]], wall: float
) -> None:
    """label_efficiency.md (the table), .json (every run and the summary), .png (the plot)."""
    summary = summarize(scores)
    first = scores[ROWS[0]][next(iter(scores[ROWS[0]]))][0]
    steps = (
        f"stage 1 {first['stage1_steps']} steps, stage 2 {first['stage2_steps']}; "
        f"{ROWS[1]}: stage 2 {first['total_steps']} (the same total)"
    )
    corpus = args.corpus
    (args.out / "label_efficiency.md").write_text(
        markdown(summary, args.seeds, wall, steps, corpus)
    )
    (args.out / "label_efficiency.json").write_text(json.dumps(
        {"scores": scores, "summary": summary, "wall_s": wall, "overrides": args.sets,
         "corpus": corpus}, indent=1
    ))  # fmt: skip
    plot(scores, summary, args.out / "label_efficiency.png", corpus)


if __name__ == "__main__":
    main()
