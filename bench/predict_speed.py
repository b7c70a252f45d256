"""Benchmark: frames/s of `clef predict` (decode + face detection/alignment + cpu-tiny model +
CSV/Parquet) on a synthetic 640x480 video, next to decode-only frames/s of OpenCV, decord and
PyAV on the same file, in one run (speed does not depend on the weights: a random-init model).

    .venv/bin/python bench/predict_speed.py [--threads N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def decode_rate(path: Path, backend: str) -> float:
    from preprocessing.decode import iter_video

    start, n = time.perf_counter(), 0
    for _ in iter_video(path, backend):  # type: ignore[arg-type]
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    from clef_core.common.runtime import configure_process

    configure_process()  # an entry point: the service environment, as `clef` sets it
    from clef_core.inference.predictor import Predictor
    from clef_core.method.checkpoint import save_checkpoint
    from clef_core.method.config import load_config
    from clef_core.method.labels import LabelSpace
    from clef_core.method.model import build_model
    from flows.predict import predict_item
    from preprocessing.synth.generate import generate
    from preprocessing.synth.spec import make_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
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
        rates = {f"decode only, {b}": decode_rate(video, b) for b in ("opencv", "decord", "pyav")}
        predictor = Predictor.from_uri(str(ckpt), batch_size=32)
        result = predict_item(predictor, "clip", [video], root / "out", every=1)
        rates["clef predict (whole)"] = result.frames / result.seconds
    fastest = max(v for k, v in rates.items() if k.startswith("decode"))
    for k, v in rates.items():
        print(f"{k:28s} {v:8.0f} frames/s")
    ratio = rates["clef predict (whole)"] / fastest
    print(
        f"clef predict / fastest decode-only: {ratio:.2f} ({result.frames} frames, {result.faces} faces)"
    )
    out = Path(".bench")
    out.mkdir(exist_ok=True)
    (out / "predict_speed.json").write_text(json.dumps({**rates, "ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
