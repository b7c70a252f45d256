"""Benchmark: synthetic rendering speed at 640x480 and the face detection rate on it.

Reports, in one run on this machine: render-only frames/s on one core (no encoding), render +
JPEG encode frames/s on one core, whole `generate` frames/s with all cores (per core too),
and the share of visible faces the project's face front end (MTCNN) finds.

    .venv/bin/python -m bench.synth_speed [--frames 600] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import pyarrow.parquet as pq

from synthetic.dynamics import BP4D_PROFILES, activity_track
from synthetic.generate import generate
from synthetic.identity import make_identity, rng_for
from synthetic.scene import SequenceRenderer
from synthetic.spec import encode_jpeg, make_spec


def render_rate(frames: int, encode: bool) -> float:
    cv2.setNumThreads(1)
    subjects = ["F001", "M007", "F018", "M011"]
    per = frames // len(subjects)
    elapsed = 0.0
    for name in subjects:
        rng = rng_for(0, "bench", name)
        track = activity_track(per, BP4D_PROFILES["T1"], rng)
        renderer = SequenceRenderer(make_identity(name, 0), rng, per, (640, 480))
        start = time.perf_counter()
        for i in range(per):
            frame, _ = renderer.render(i, track[i])
            if encode:
                encode_jpeg(frame)
        elapsed += time.perf_counter() - start
    return per * len(subjects) / elapsed


def detection_rate(root: Path) -> float:
    """Share of visible faces the project's face front end (MTCNN) finds, each frame alone."""
    from faces.detect import FaceDetector

    detector = FaceDetector()
    files = {
        (p.parts[-3], p.parts[-2], int(p.stem)): p
        for p in (root / "BP4D/BP4D-training").glob("*/*/*.jpg")
    }
    hits = total = 0
    for r in pq.read_table(root / "truth/bp4d.parquet").to_pylist():
        if r["visible"]:
            image = cv2.imread(str(files[(r["subject"], r["task"], r["frame"])]))
            hits += detector.detect(image) is not None
            total += 1
    return hits / total


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--subjects", type=int, default=12, help="of the generated BP4D")
    parser.add_argument("--smoke", action="store_true", help="seconds: 16 frames, 3 subjects")
    args = parser.parse_args(argv)
    if args.smoke:  # the generator's smallest BP4D: 3 subjects (one a fold part), 4 frames a task
        args.frames, args.subjects = 16, 3
    cores = os.cpu_count() or 1
    render = render_rate(args.frames, encode=False)
    encoded = render_rate(args.frames, encode=True)
    per_task = 4 if args.smoke else 24
    with tempfile.TemporaryDirectory() as tmp:
        spec = make_spec(
            Path(tmp), "demo", datasets=("bp4d",), subjects=args.subjects,
            frames_per_task=per_task, workers=cores,
        )  # fmt: skip
        start = time.perf_counter()
        (summary,) = generate(spec, show_progress=False)
        whole = summary.frames / (time.perf_counter() - start)
        detected = detection_rate(Path(tmp))
    print(f"render only, 1 core, 640x480       : {render:7.0f} frames/s")
    print(f"render + JPEG, 1 core, 640x480     : {encoded:7.0f} frames/s")
    print(
        f"generate BP4D, {cores} processes, 640x480: {whole:7.0f} frames/s ({whole / cores:.0f} per core, files written)"
    )
    print(
        f"faces found (MTCNN), visible       : {100 * detected:6.1f} %  of {summary.frames - summary.no_face} frames"
    )
    print(f"no-face frames                     : {100 * summary.no_face / summary.frames:6.1f} %")
    out = {"render": render, "render_jpeg": encoded, "generate": whole, "detected": detected}
    return out


if __name__ == "__main__":
    main()
