"""Benchmark: frames/s of `clef predict` (decode + face detection/alignment + cpu-tiny model +
CSV/Parquet) on a synthetic 640x480 video, and of scoring aligned face crops alone, next to
decode-only frames/s of OpenCV, decord and PyAV on the same file, in one run (speed does not
depend on the weights: a random-init model).

`--against REV` also loads the Predictor of another revision (its
`clef_core/inference/predictor.py` from git, the rest of the code this tree's) and measures
both, interleaved, `--repeats` times each, so a shared machine's load falls on both alike:
it prints each one's median and this tree's / REV's ratio.

`--presets cpu-tiny paper` also measures each preset's architecture (random weights; `paper`:
the paper's ViT-B/16 at 224 px) on a shorter video of the same kind: `clef predict` frames/s,
and aligned crops scored per second in fp32 and under bf16 autocast, at 1 and 2 intra-op
threads, ending with one result line per preset (`--smoke`: a few frames, seconds).

    .venv/bin/python -m bench.predict_speed [--threads N] [--device cpu] [--against main --repeats 5]
    .venv/bin/python -m bench.predict_speed --presets cpu-tiny paper [--smoke]
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
    parser.add_argument("--presets", nargs="+", default=[], choices=["cpu-tiny", "paper"],
                        help="also measure these presets' architectures (random weights)")  # fmt: skip
    parser.add_argument("--frames-per-task", type=int, default=200, help="of the main video")
    parser.add_argument("--smoke", action="store_true", help="seconds: tiny video, few crops")
    parser.add_argument("--out", type=Path, default=Path(".bench"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.frames_per_task, args.batch = 4, 4
    return args


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    else:  # as `clef predict` sets them
        from flows.cli_predict import set_cpu_threads

        set_cpu_threads()


def make_video(root: Path, frames_per_task: int) -> Path:
    """A synthetic 640x480 video (`frames_per_task` frames a task) under `root`."""
    from synthetic.generate import generate
    from synthetic.spec import make_spec

    spec = make_spec(root, "demo", datasets=("videos",), videos=1, frames_per_task=frames_per_task)
    generate(spec, show_progress=False)
    return next((root / "videos").glob("*.mp4"))


def checkpoint(root: Path, preset: str) -> Path:
    """A random-init stage-2 checkpoint of `preset`'s model for BP4D's 12 AUs, under `root`."""
    from clef_core.method.checkpoint import save_checkpoint
    from clef_core.method.config import load_config
    from clef_core.method.labels import LabelSpace
    from clef_core.method.model import build_model

    cfg = load_config(preset)
    model = build_model(cfg.model)
    aus = LabelSpace.aus((1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24))
    return save_checkpoint(root / f"model-{preset}", model, cfg, 2, 0, 0, aus)


def video_and_checkpoint(root: Path, frames_per_task: int = 200) -> tuple[Path, Path]:
    """A synthetic 640x480 video and a random-init cpu-tiny stage-2 checkpoint, under `root`."""
    return make_video(root / "synth", frames_per_task), checkpoint(root, "cpu-tiny")


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
        video, ckpt = video_and_checkpoint(root, args.frames_per_task)
        rates = {f"decode only, {b}": decode_rate(video, b) for b in ("opencv", "decord", "pyav")}
        predictors = load_predictors(args, ckpt, root)
        crops = random_crops(16 if args.smoke else 256)
        whole: dict[str, list[float]] = {k: [] for k in predictors}
        scoring: dict[str, list[float]] = {k: [] for k in predictors}
        for r in range(repeats):
            names = list(predictors) if r % 2 == 0 else list(reversed(predictors))
            for name in names:
                result = predict_item(predictors[name], "clip", [video], root / "out", every=1)
                whole[name].append(result.frames / result.seconds)
                scoring[name].append(crop_rate(predictors[name], crops, args.batch))
    return Measured(rates, whole, scoring, result.frames, result.faces)


def random_crops(n: int) -> np.ndarray:
    """`n` aligned-crop-shaped uint8 images (speed does not depend on the pixels)."""
    return np.random.default_rng(0).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


def arch_rates(args: argparse.Namespace, preset: str, root: Path, video: Path) -> dict[str, float]:
    """`preset`'s architecture: `clef predict` frames/s on `video` (threads as set), then
    aligned crops scored per second in fp32 and under bf16 autocast, at 1 and 2 threads."""
    from clef_core.inference.predictor import Predictor
    from flows.predict import predict_item

    predictor = Predictor.from_uri(str(checkpoint(root, preset)), args.device, args.batch)
    result = predict_item(predictor, preset, [video], root / f"out-{preset}", every=1)
    rates = {"clef predict (whole)": result.frames / result.seconds}
    threads = torch.get_num_threads()
    crops = random_crops(args.batch if args.smoke else 4 * args.batch)
    for n in (1, 2):
        torch.set_num_threads(n)
        for precision in ("fp32", "bf16"):
            for h in predictor.heads:  # the paper preset's own setting is bf16
                h.precision = precision
            rates[f"crops, {precision}, {n} thread(s)"] = crop_rate(predictor, crops, args.batch)
    torch.set_num_threads(threads)
    return rates


def report_arch(all_rates: dict[str, dict[str, float]], decode: float) -> dict[str, Any]:
    """Prints each preset's rates and its result line; the summary."""
    summary: dict[str, Any] = {}
    for preset, rates in all_rates.items():
        for k, v in rates.items():
            print(f"{preset:9s} {k:31s} {v:8.1f} frames/s")
        crops = {k: v for k, v in rates.items() if k.startswith("crops")}
        best = max(crops, key=crops.__getitem__)
        threads = best.rsplit(", ", 1)[1]
        fp32 = rates[f"crops, fp32, {threads}"]  # the same threads in full precision
        line = (
            f"{preset}: clef predict {rates['clef predict (whole)']:.1f} frames/s "
            f"({rates['clef predict (whole)'] / decode:.3f} of decode-only {decode:.0f}); "
            f"scoring fastest with {best.removeprefix('crops, ')}: {crops[best]:.1f} crops/s, "
            f"{crops[best] / fp32:.2f}x fp32 at {threads}"
        )
        print(line)
        summary[preset] = {**rates, "fastest": best, "line": line}
    return summary


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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = entry(parse, argv)
    repeats = args.repeats or (5 if args.against else 1)
    set_threads(args.threads)
    m = measure(args, repeats)
    summary = report(m, args.against, repeats)
    if args.presets:
        with tempfile.TemporaryDirectory() as tmp:  # a tenth of the main video's frames
            video = make_video(Path(tmp) / "synth", max(4, args.frames_per_task // 10))
            rates = {p: arch_rates(args, p, Path(tmp), video) for p in args.presets}
        decode = max(v for k, v in m.rates.items() if k.startswith("decode"))
        summary["presets"] = report_arch(rates, decode)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "predict_speed.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
