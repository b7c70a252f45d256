"""DISFA layout: left-camera videos and per-AU intensity files.

<root>/Videos_LeftCamera/LeftVideoSN001_comp.avi (MJPG)
<root>/ActionUnit_Labels/SN001/SN001_au1.txt ... one `frameIdx,intensity` line per frame
(1-based, integer 0-5) for the 12 coded AUs. A subject watches a stimulus video that moves
through several emotions, so the video's AU track chains several activity profiles; the
rendered intensities are the labels' integers (what was drawn is what is written).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import cv2
import numpy as np

from synthetic.dynamics import AU_INDEX, BP4D_PROFILES, activity_track
from synthetic.identity import make_identity, rng_for
from synthetic.scene import SequenceRenderer
from synthetic.sequence import truth_row
from synthetic.spec import SynthSpec

DISFA_CODED_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
SEGMENTS = 4  # emotion segments per stimulus video
FPS = 20.0


def jobs(spec: SynthSpec, dataset: str = "disfa") -> list[Any]:
    return [partial(write_subject, spec, s) for s in spec.subjects_of("disfa")]


def stimulus_track(spec: SynthSpec, subject: str, n_frames: int) -> np.ndarray:
    """Integer AU intensities of one subject's video: chained activity profiles."""
    rng = rng_for(spec.seed, "disfa", subject, "track")
    idt = make_identity(subject, spec.seed)
    profiles = list(BP4D_PROFILES.values())
    seg = n_frames // SEGMENTS
    parts = []
    for k in range(SEGMENTS):
        length = seg if k < SEGMENTS - 1 else n_frames - seg * (SEGMENTS - 1)
        parts.append(
            activity_track(
                length, profiles[int(rng.integers(len(profiles)))], rng, idt.expressiveness
            )
        )
    return np.rint(np.concatenate(parts)).astype(np.float32)


def write_subject(spec: SynthSpec, subject: str) -> list[dict]:
    n = spec.frames_per_task * SEGMENTS
    track = stimulus_track(spec, subject, n)
    rng = rng_for(spec.seed, "disfa", subject, "render")
    renderer = SequenceRenderer(
        make_identity(subject, spec.seed), rng, n, spec.image_size, spec.no_face_share
    )
    root = spec.root("disfa")
    video = root / "Videos_LeftCamera" / f"LeftVideo{subject}_comp.avi"
    video.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, spec.image_size)
    rows = []
    try:
        for i in range(n):
            frame, truth = renderer.render(i, track[i])
            writer.write(frame)
            rows.append(truth_row("disfa", subject, None, i + 1, track[i], truth))
    finally:
        writer.release()
    labels = root / "ActionUnit_Labels" / subject
    labels.mkdir(parents=True, exist_ok=True)
    for au in DISFA_CODED_AUS:
        column = track[:, AU_INDEX[au]].astype(int)
        text = "".join(f"{i + 1},{v}\n" for i, v in enumerate(column))
        (labels / f"{subject}_au{au}.txt").write_text(text)
    return rows


def finish(spec: SynthSpec, dataset: str, rows: list[dict]) -> None:
    """Nothing to index: DISFA has no list file."""
