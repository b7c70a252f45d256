"""Benchmark: frames/s of `clef predict` (decode + face detection/alignment + cpu-tiny model +
CSV/Parquet) on a synthetic 640x480 video, and of scoring aligned face crops alone, next to
decode-only frames/s of OpenCV, decord and PyAV on the same file, in one run (speed does not
depend on the weights: a random-init model).

`--against REV` also loads the Predictor of another revision (its
`clef_core/inference/predictor.py` from git, the rest of the code this tree's) and measures
both, interleaved, `--repeats` times each, so a shared machine's load falls on both alike:
it prints each one's median and this tree's / REV's ratio.

    .venv/bin/python bench/predict_speed.py [--threads N] [--device cpu] [--against main --repeats 5]
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
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch


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


def main() -> None:
    from clef_core.common.runtime import configure_process

    configure_process()  # an entry point: the service environment, as `clef` sets it
    from clef_core.inference.predictor import Predictor
    from clef_core.method.checkpoint import save_checkpoint
    from clef_core.method.config import load_config
    from clef_core.method.labels import LabelSpace
    from clef_core.method.model import build_model
    from flows.predict import predict_item
    from synthetic.generate import generate
    from synthetic.spec import make_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32, help="faces scored per batch")
    parser.add_argument("--against", default=None, help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=None, help="measurements of each")
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.against else 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    else:  # as `clef predict` sets them
        from flows.cli_predict import set_cpu_threads

        set_cpu_threads()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(
            make_spec(root / "synth", "demo", datasets=("videos",), videos=1, frames_per_task=200),
            show_progress=False,
        )
        video = next((root / "synth" / "videos").glob("*.mp4"))
        cfg = load_config("cpu-tiny")
        model = build_model(cfg.model)
        ckpt = save_checkpoint(
            root / "model",
            model,
            cfg,
            2,
            0,
            0,
            LabelSpace.aus((1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)),
        )
        rates: dict[str, float] = {
            f"decode only, {b}": decode_rate(video, b) for b in ("opencv", "decord", "pyav")
        }
        predictors = {"this tree": Predictor.from_uri(str(ckpt), args.device, args.batch)}
        if args.against:
            old = predictor_module_at(args.against, root)
            predictors[args.against] = old.Predictor.from_uri(str(ckpt), args.device, args.batch)
        crops = np.random.default_rng(0).integers(0, 256, (256, 224, 224, 3), dtype=np.uint8)
        whole: dict[str, list[float]] = {k: [] for k in predictors}
        scoring: dict[str, list[float]] = {k: [] for k in predictors}
        for r in range(repeats):
            names = list(predictors) if r % 2 == 0 else list(reversed(predictors))
            for name in names:  # interleaved, the order alternating
                result = predict_item(predictors[name], "clip", [video], root / "out", every=1)
                whole[name].append(result.frames / result.seconds)
                scoring[name].append(crop_rate(predictors[name], crops, args.batch))
    for name in predictors:
        suffix = "" if name == "this tree" else f" [{name}]"
        rates[f"clef predict (whole){suffix}"] = statistics.median(whole[name])
        rates[f"scoring aligned crops{suffix}"] = statistics.median(scoring[name])
    fastest = max(v for k, v in rates.items() if k.startswith("decode"))
    for k, v in rates.items():
        print(f"{k:40s} {v:8.0f} frames/s")
    ratio = rates["clef predict (whole)"] / fastest
    print(
        f"clef predict / fastest decode-only: {ratio:.2f} ({result.frames} frames, {result.faces} faces)"
    )
    summary: dict[str, Any] = {**rates, "ratio": ratio, "repeats": repeats}
    if args.against:
        for label, series in (("whole", whole), ("crops", scoring)):
            pairs = [a / b for a, b in zip(series["this tree"], series[args.against], strict=True)]
            summary[f"ratio_{label}_vs_{args.against}"] = statistics.median(pairs)
            print(
                f"this tree / {args.against}, {label}: median ratio {statistics.median(pairs):.2f} "
                f"(per pair: {', '.join(f'{p:.2f}' for p in pairs)})"
            )
    out = Path(".bench")
    out.mkdir(exist_ok=True)
    (out / "predict_speed.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
