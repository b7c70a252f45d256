"""Benchmark: preprocessing frames per CPU-second next to decode-only, same files, one run.

On synthetic 640x480 DISFA-style MJPG videos: decode-only speed of OpenCV, decord and PyAV,
and the whole per-sequence pipeline (decode + MTCNN face search + O-Net landmarks on every
frame + alignment + JPEG + Parquet) over the same videos, in one process (issue #30's
target: >= 300 frames per CPU-second). Speeds are counted in CPU seconds (the per-core cost;
decord decodes on more than one thread). This machine is a shared VM whose speed drifts by +-15%
within minutes, so decoders and pipeline are timed in interleaved rounds and each keeps its
best round: the ratio compares like with like. Peak RSS of the pipeline is measured in
fresh processes on a video and on one twice as long.

Then BP4D-size JPEG frames (1040 x 1392 portrait, a face ~3x the crop): the pipeline with
frames decoded at full size and at the reduced size it picks (`reduce_decode`). The last line:
`pipeline N frames/CPU-s, decode D, ratio R` (D: the fastest decoder's, same run).

    .venv/bin/python -m bench.preprocess_speed [--frames 600] [--rounds 5] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import torch
from rich.progress import track

from bench.common import entry
from faces.decode import Backend, iter_video
from preprocessing.pipeline import PreprocessOptions, plan, process_sequence
from synthetic.generate import generate
from synthetic.spec import make_spec

BACKENDS: tuple[Backend, ...] = ("opencv", "decord", "pyav")

# The peak as VmHWM, the child's own: Linux carries ru_maxrss over fork and exec, so a child
# of this (large) process reported the parent's peak (639 MB against its own 410).
PEAK_RSS = """
import json, re, sys
from pathlib import Path
from preprocessing.pipeline import PreprocessOptions, plan, process_sequence
opts = PreprocessOptions("disfa", Path(sys.argv[1]), Path(sys.argv[2]), force=True)
for seq in plan(opts)[0]:
    process_sequence(opts, seq)
status = Path("/proc/self/status").read_text()
print(json.dumps({"peak_rss_mb": int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024}))
"""


def synth(out: Path, dataset: str, frames_per_task: int, size: tuple[int, int]) -> Path:
    """A synthetic dataset of 3 subjects (one per fold part); its reader's root."""
    spec = make_spec(
        out,
        "demo",
        datasets=(dataset,),
        subjects=3,
        frames_per_task=frames_per_task,
        image_size=size,
        workers=2,
    )
    generate(spec, show_progress=False)
    return spec.root(dataset)


def cpu_rate(work: Callable[[], int]) -> float:
    """Frames per CPU-second of all threads (time.process_time) of one call of `work`."""
    start = time.process_time()
    frames = work()
    return frames / (time.process_time() - start)


def whole_dataset(opts: PreprocessOptions) -> Callable[[], int]:
    return lambda: sum(process_sequence(opts, seq).frames for seq in plan(opts)[0])


def peak_rss(root: Path, shards: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(root), str(shards)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"])


@dataclass
class Measured:
    videos: int
    frames: int  # of the videos, and faces found in them
    faces: int
    best: dict[str, float]  # each decoder's and the pipeline's best frames per CPU-second
    rss: tuple[float, float]  # peak RSS (MB), a video and one twice as long
    large: dict[bool, float]  # BP4D-size JPEG frames per CPU-second, by reduce_decode


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="seconds: 16 frames, one round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.frames, args.rounds = 16, 1
    return args


def interleaved(work: dict[Any, Callable[[], int]], rounds: int, what: str) -> dict[Any, float]:
    """Each work's best frames per CPU-second over `rounds` rounds of all of them in turn."""
    best: dict[Any, float] = dict.fromkeys(work, 0.0)
    for _ in track(range(rounds), description=what):
        for name, fn in work.items():
            best[name] = max(best[name], cpu_rate(fn))
    return best


def video_rates(root: Path, shards: Path, rounds: int) -> tuple[dict[str, float], list, int]:
    """Decode-only and whole-pipeline rates on the DISFA videos under `root`, the pipeline's
    last results and the number of videos."""
    videos = sorted((root / "Videos_LeftCamera").glob("*.avi"))
    opts = PreprocessOptions("disfa", root, shards, force=True)
    sequences = plan(opts)[0]
    results = [process_sequence(opts, seq) for seq in sequences]  # warm-up (imports)

    def decode(backend: Backend) -> Callable[[], int]:
        return lambda: sum(1 for v in videos for _ in iter_video(v, backend))

    def pipeline() -> int:
        results[:] = [process_sequence(opts, seq) for seq in sequences]
        return sum(r.frames for r in results)

    work: dict[str, Callable[[], int]] = {b: decode(b) for b in BACKENDS}
    work["pipeline"] = pipeline
    return interleaved(work, rounds, "interleaved rounds"), results, len(videos)


def measure(args: argparse.Namespace) -> Measured:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        # A DISFA video holds 4x frames_per_task frames; BP4D has 8 tasks x 3 subjects.
        short = synth(base / "a", "disfa", args.frames // 4, (640, 480))
        long = synth(base / "b", "disfa", args.frames // 2, (640, 480))
        best, results, videos = video_rates(short, base / "s", args.rounds)
        rss = peak_rss(short, base / "r1"), peak_rss(long, base / "r2")
        large = synth(base / "c", "bp4d", max(4, args.frames // 24), (1040, 1392))
        jpeg = {
            r: PreprocessOptions("bp4d", large, base / f"j{r}", force=True, reduce_decode=r)
            for r in (False, True)
        }
        work = {r: whole_dataset(o) for r, o in jpeg.items()}
        large_rate = interleaved(work, args.rounds, "BP4D-size frames")
    frames, faces = sum(r.frames for r in results), sum(r.faces for r in results)
    return Measured(videos, frames, faces, best, rss, large_rate)


def report(m: Measured, args: argparse.Namespace) -> dict[str, float]:
    best, rss = m.best, m.rss
    fastest = max(BACKENDS, key=best.__getitem__)
    print(f"{m.videos} videos, {m.frames} frames, best of {args.rounds} interleaved rounds")
    for backend in BACKENDS:
        print(f"decode only, {backend:<7}    : {best[backend]:6.0f} frames per CPU-second")
    print(
        f"whole pipeline          : {best['pipeline']:6.0f} frames per CPU-second "
        f"({100 * best['pipeline'] / best[fastest]:.0f}% of {fastest}; target >= 300)"
    )
    print(f"faces found             : {100 * m.faces / m.frames:6.1f} %")
    print(f"peak RSS, {args.frames} frames    : {rss[0]:6.0f} MB")
    print(
        f"peak RSS, {2 * args.frames} frames   : {rss[1]:6.0f} MB ({100 * (rss[1] / rss[0] - 1):+.1f}%)"
    )

    full, reduced = m.large[False], m.large[True]
    print(f"BP4D-size JPEG, full    : {full:6.0f} frames per CPU-second")
    print(f"BP4D-size JPEG, reduced : {reduced:6.0f} frames per CPU-second ({reduced / full:.2f}x)")
    ratio = best["pipeline"] / best[fastest]
    print(
        f"pipeline {best['pipeline']:.0f} frames/CPU-s, decode {best[fastest]:.0f}, ratio {ratio:.2f}"
    )
    return {**best, "faces": m.faces / m.frames, "bp4d_full": full, "bp4d_reduced": reduced,
            "peak_rss_mb": rss[0], "peak_rss_mb_twice": rss[1], "ratio": ratio}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = entry(parse, argv)
    cv2.setNumThreads(1)  # per core: one sequence per single-threaded task (as in Ray tasks)
    torch.set_num_threads(1)
    return report(measure(args), args)


if __name__ == "__main__":
    main()
