"""The command line: shards, the config, the measurements in order, the table and last line."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import bench.train_speed as package
from bench.common import entry


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(package.__doc__ or "").splitlines()[0],
        epilog="The last line printed: ray/plain stage1 R1 stage2 R2 (images/s ratios).",
    )
    p.add_argument("--preset", default="cpu-tiny")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="a data dir with BP4D shards (default: synthetic ones in a temp dir)")  # fmt: skip
    p.add_argument("--steps", type=int, default=40, help="steps of each measurement")
    p.add_argument("--warm", type=int, default=5, help="first steps not timed")
    p.add_argument("--profile-steps", type=int, default=12)
    p.add_argument("--set", dest="sets", action="append", default=[], help="config override")
    p.add_argument("--smoke", action="store_true",
                   help="seconds, not a measurement: batch 8 at 64 px, 4 steps (the test's)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path(".bench"))
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.warm, args.profile_steps = 4, 1, 3
        args.sets = ["stage1.batch_size=8", "stage2.batch_size=8",
                     "model.inline.image_size=64", *args.sets]  # fmt: skip
    return args


def config(args: argparse.Namespace, data_dir: Path) -> Any:
    """The preset with the data dir and each stage at `--steps` steps of one epoch."""
    from clef_core.method.config import load_config

    sets = [f"data.data_dir={data_dir}", "compute.max_failures=0"]
    for s in ("stage1", "stage2"):
        sets += [f"{s}.epochs=1", f"{s}.steps_per_epoch={args.steps}"]
    return load_config(args.preset, [*sets, *args.sets])


def measure(args: argparse.Namespace, data_dir: Path, work: Path) -> dict[str, Any]:
    """Per stage: plain, Ray Train, plain again (interleaved: the machine's load falls on
    both); then the stage-2 profile."""
    from bench.train_speed.measure import plain_rate, ray_rate, setup
    from bench.train_speed.profile import profile_stage2

    cfg = config(args, data_dir)
    threads = max(1, int(cfg.compute.cpus_per_worker))  # what the Ray worker sets
    out: dict[str, Any] = {"threads": threads, "steps": args.steps, "warm": args.warm}
    for number in (1, 2):
        s = setup(cfg, number)
        first = plain_rate(s, args.steps, args.warm, threads)
        ray = ray_rate(cfg, s, work / f"ray{number}", args.warm)
        second = plain_rate(s, args.steps, args.warm, threads)
        plain = (first + second) / 2
        out[f"stage{number}"] = {"ray": ray, "plain": plain, "plain_runs": [first, second],
                                 "ratio": ray / plain, "batch": s.stage.hp.batch_size}  # fmt: skip
        if number == 2:
            out["profile_stage2_ms"] = profile_stage2(s, args.profile_steps, args.warm, threads)
    return out


def report(m: dict[str, Any]) -> str:
    """Prints the rates and the profile; returns the last line."""
    print(f"warm steps timed: {m['steps'] - m['warm'] - 1} of {m['steps']}; {m['threads']} threads")
    for stage in ("stage1", "stage2"):
        r = m[stage]
        runs = ", ".join(f"{v:.1f}" for v in r["plain_runs"])
        print(f"{stage} (batch {r['batch']}): Ray Train {r['ray']:8.1f} images/s, "
              f"plain {r['plain']:8.1f} (runs {runs}), ratio {r['ratio']:.2f}")  # fmt: skip
    prof = m["profile_stage2_ms"]
    whole = prof["whole step (sum of the above)"]
    print("\nstage-2 step, plain loop (median ms; share of the step)")
    for name, ms in prof.items():
        print(f"  {name:42s} {ms:8.1f}  {100 * ms / whole:5.1f}%")
    handoff = m["stage2"]["batch"] * (1 / m["stage2"]["ray"] - 1 / m["stage2"]["plain"])
    print(f"  {'Ray Train over plain, per step (hand-off)':42s} {1000 * handoff:8.1f}")
    return f"ray/plain stage1 {m['stage1']['ratio']:.2f} stage2 {m['stage2']['ratio']:.2f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import ray

    from clef_core.common.runtime import init_ray

    args = entry(parse, argv)
    started = init_ray(None)  # before the first plain run: Ray's idle load falls on both
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = args.data_dir
            if data_dir is None:
                from bench.train_speed.measure import make_shards

                data_dir = make_shards(Path(tmp) / "data").parent
            results = measure(args, data_dir, Path(tmp))
    finally:
        if started:
            ray.shutdown()
    last = report(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_speed.json").write_text(json.dumps(results, indent=1))
    print(last)
    return results
