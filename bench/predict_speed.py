"""Benchmark: frames/s of `clef predict` (decode + face detection/alignment + cpu-tiny model +
CSV/Parquet) on a synthetic 640x480 video, and of scoring aligned face crops alone, next to
decode-only frames/s of OpenCV, decord and PyAV on the same file, in one run (speed does not
depend on the weights: a random-init model).

`--against REV` also loads the Predictor of another revision (its
`clef_core/inference/predictor.py` from git, the rest of the code this tree's) and measures
both, interleaved, `--repeats` times each, so a shared machine's load falls on both alike:
it prints each one's median and this tree's / REV's ratio.

    .venv/bin/python -m bench.predict_speed [--threads N] [--device cpu] [--against main --repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from bench.common import entry


def decode_rate(path: Path, backend: str) -> float:
    from faces.decode import iter_video

    start, n = time.perf_counter(), 0
    for _ in iter_video(path, backend):  # type: ignore[arg-type]
        n += 1
    return n / (time.perf_counter() - start)


def predictor_module_at(rev: str, folder: Path) -> ModuleType:
    """`clef_core.inference.predictor` as it is at git revision `rev` (imports resolve to
    this tree's other modules)."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "-C", str(root), "show", f"{rev}:clef_core/inference/predictor.py"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    path = folder / f"predictor_{rev.replace('/', '_')}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"predictor_at_{rev}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def crop_rate(predictor: Any, crops: np.ndarray, batch: int) -> float:
    """Aligned crops scored per second (the model's part of `clef predict`)."""
    score = getattr(predictor, "score_crops", None) or predictor._score  # older revisions
    score(crops[:batch])  # warm
    start = time.perf_counter()
    for i in range(0, len(crops), batch):
        score(crops[i : i + batch])
    return len(crops) / (time.perf_counter() - start)


@dataclass
class Measured:
    rates: dict[str, float]  # decode-only frames/s of each backend
    whole: dict[str, list[float]]  # `clef predict` frames/s of each predictor, a repeat each
    scoring: dict[str, list[float]]  # aligned crops scored per second, likewise
    frames: int  # of the video, and faces found in them
    faces: int


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32, help="faces scored per batch")
    parser.add_argument("--against", default=None, help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=None, help="measurements of each")
    return parser.parse_args(argv)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    else:  # as `clef predict` sets them
        from flows.cli_predict import set_cpu_threads

        set_cpu_threads()


def video_and_checkpoint(root: Path) -> tuple[Path, Path]:
    """A synthetic 640x480 video (200 frames a task) and a random-init cpu-tiny stage-2
    checkpoint for BP4D's 12 AUs, under `root`."""
    from clef_core.method.checkpoint import save_checkpoint
    from clef_core.method.config import load_config
    from clef_core.method.labels import LabelSpace
    from clef_core.method.model import build_model
    from synthetic.generate import generate
    from synthetic.spec import make_spec

    generate(
        make_spec(root / "synth", "demo", datasets=("videos",), videos=1, frames_per_task=200),
        show_progress=False,
    )
    video = next((root / "synth" / "videos").glob("*.mp4"))
    cfg = load_config("cpu-tiny")
    model = build_model(cfg.model)
    aus = LabelSpace.aus((1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24))
    return video, save_checkpoint(root / "model", model, cfg, 2, 0, 0, aus)


def load_predictors(args: argparse.Namespace, ckpt: Path, root: Path) -> dict[str, Any]:
    """This tree's Predictor and, with --against, that revision's, on the same checkpoint."""
    from clef_core.inference.predictor import Predictor

    predictors = {"this tree": Predictor.from_uri(str(ckpt), args.device, args.batch)}
    if args.against:
        old = predictor_module_at(args.against, root)
        predictors[args.against] = old.Predictor.from_uri(str(ckpt), args.device, args.batch)
    return predictors


def measure(args: argparse.Namespace, repeats: int) -> Measured:
    """Decode-only rates, then each predictor `repeats` times, interleaved (the order
    alternating): the whole of `clef predict` and the scoring of aligned crops."""
    from flows.predict import predict_item

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        video, ckpt = video_and_checkpoint(root)
        rates = {f"decode only, {b}": decode_rate(video, b) for b in ("opencv", "decord", "pyav")}
        predictors = load_predictors(args, ckpt, root)
        crops = np.random.default_rng(0).integers(0, 256, (256, 224, 224, 3), dtype=np.uint8)
        whole: dict[str, list[float]] = {k: [] for k in predictors}
        scoring: dict[str, list[float]] = {k: [] for k in predictors}
        for r in range(repeats):
            names = list(predictors) if r % 2 == 0 else list(reversed(predictors))
            for name in names:
                result = predict_item(predictors[name], "clip", [video], root / "out", every=1)
                whole[name].append(result.frames / result.seconds)
                scoring[name].append(crop_rate(predictors[name], crops, args.batch))
    return Measured(rates, whole, scoring, result.frames, result.faces)


def report(m: Measured, against: str | None, repeats: int) -> dict[str, Any]:
    """Prints the medians (and with --against the ratios of each pair); the summary."""
    rates = dict(m.rates)
    for name in m.whole:
        suffix = "" if name == "this tree" else f" [{name}]"
        rates[f"clef predict (whole){suffix}"] = statistics.median(m.whole[name])
        rates[f"scoring aligned crops{suffix}"] = statistics.median(m.scoring[name])
    fastest = max(v for k, v in rates.items() if k.startswith("decode"))
    for k, v in rates.items():
        print(f"{k:40s} {v:8.0f} frames/s")
    ratio = rates["clef predict (whole)"] / fastest
    print(f"clef predict / fastest decode-only: {ratio:.2f} ({m.frames} frames, {m.faces} faces)")
    summary: dict[str, Any] = {**rates, "ratio": ratio, "repeats": repeats}
    if against:
        for label, series in (("whole", m.whole), ("crops", m.scoring)):
            pairs = [a / b for a, b in zip(series["this tree"], series[against], strict=True)]
            summary[f"ratio_{label}_vs_{against}"] = statistics.median(pairs)
            print(
                f"this tree / {against}, {label}: median ratio {statistics.median(pairs):.2f} "
                f"(per pair: {', '.join(f'{p:.2f}' for p in pairs)})"
            )
    return summary


def main(argv: list[str] | None = None) -> None:
    args = entry(parse, argv)
    repeats = args.repeats or (5 if args.against else 1)
    set_threads(args.threads)
    summary = report(measure(args, repeats), args.against, repeats)
    out = Path(".bench")
    out.mkdir(exist_ok=True)
    (out / "predict_speed.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
