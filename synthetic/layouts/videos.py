"""A folder of plain .mp4 videos with no labels, like a user's own recordings."""

from __future__ import annotations

from functools import partial
from typing import Any

import cv2

from synthetic.dynamics import BP4D_PROFILES
from synthetic.sequence import render_sequence, truth_row
from synthetic.spec import SynthSpec

FPS = 25.0


def jobs(spec: SynthSpec, dataset: str = "videos") -> list[Any]:
    return [partial(write_video, spec, k) for k in range(spec.videos)]


def write_video(spec: SynthSpec, k: int) -> list[dict]:
    subject = f"V{k + 1:03d}"
    task = list(BP4D_PROFILES)[k % len(BP4D_PROFILES)]
    path = spec.root("videos") / f"clip_{k:02d}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, spec.image_size)
    rows = []
    try:
        n = spec.frames_per_task * 3
        for i, frame, au, truth in render_sequence(
            spec, "videos", subject, task, n, BP4D_PROFILES[task]
        ):
            writer.write(frame)
            rows.append(truth_row("videos", path.name, task, i, au, truth))
    finally:
        writer.release()
    return rows


def finish(spec: SynthSpec, dataset: str, rows: list[dict]) -> None:
    """Nothing to index."""
