"""One rendered sequence as arrays + truth rows, shared by every layout writer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from synthetic.dynamics import activity_track
from synthetic.identity import Identity, make_identity, rng_for
from synthetic.scene import FrameTruth, SequenceRenderer
from synthetic.spec import SynthSpec


def truth_row(
    dataset: str,
    subject: str,
    task: str | None,
    frame: int,
    au: np.ndarray,
    truth: FrameTruth,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "subject": subject,
        "task": task,
        "frame": int(frame),
        "visible": truth.visible,
        "box": list(truth.box),
        "eyes": list(truth.eyes),
        "au_intensity": [float(v) for v in au],
        **extra,
    }


def identity_of(dataset: str, subject: str, seed: int) -> Identity:
    """The person filmed as `subject` of `dataset`. BP4D+ recruited other people than BP4D
    under the same ids (F001...): its own cohort, so a stage 1 on it never sees BP4D's
    held-out faces. BP4D, DISFA and the videos keep the faces measured so far."""
    return make_identity(subject, seed, cohort="bp4d_plus" if dataset == "bp4d_plus" else "")


def render_sequence(
    spec: SynthSpec,
    dataset: str,
    subject: str,
    task: str,
    n_frames: int,
    profile: tuple[tuple[int, ...], float],
) -> Iterator[tuple[int, np.ndarray, np.ndarray, FrameTruth]]:
    """Yield (index, BGR frame, AU intensities, truth) for one subject's task, streaming."""
    idt = identity_of(dataset, subject, spec.seed)
    rng = rng_for(spec.seed, dataset, subject, task)
    track = activity_track(n_frames, profile, rng, idt.expressiveness)
    renderer = SequenceRenderer(idt, rng, n_frames, spec.image_size, spec.no_face_share)
    for i in range(n_frames):
        frame, truth = renderer.render(i, track[i])
        yield i, frame, track[i], truth
