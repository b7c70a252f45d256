"""The face front end shared by preprocessing and `clef predict`: faces with 5 landmarks.

- Detection: MTCNN (`faces/mtcnn.py`), the P-Net pyramid, R-Net and O-Net, searching
  faces down to `min_face` of the frame's shorter side (so its cost does not grow with the
  frame's resolution). Where a frame shows several faces, the largest is the subject.
- Tracking: on continuous video a found face is followed by O-Net alone on the previous
  frame's box (1-2 ms instead of a whole-frame search); when O-Net's face score drops under
  `track_threshold` (occlusion, a cut, a face that moved more than about a fifth of its size)
  the frame is searched whole. Landmarks are therefore measured on every frame, never
  interpolated.
- Smoothing (ours): a One Euro filter (Casiez et al., CHI 2012) over the landmarks and box:
  strong while the face is still (it removes O-Net's frame-to-frame jitter), fading out with
  speed so a fast move is followed without lag. Speed is measured in inter-ocular distances
  per frame, so it does not depend on the face's size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from faces.mtcnn import MTCNN, Faces, square

T = TypeVar("T")
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class DetectorConfig:
    min_face: float = 0.1  # smallest face searched, as a fraction of the frame's shorter side
    min_face_px: float = 20.0  # and never under this (MTCNN's 12-px window at its finest)
    # O-Net face score under which a followed face is searched anew: lower than the cascade's
    # 0.7, since a face O-Net saw in the last frame at the same place needs less evidence
    # (some faces score 0.5-0.8 on every frame and would be searched whole again and again).
    track_threshold: float = 0.5
    smooth_min_cutoff: float = 0.02  # One Euro cut-off at rest, cycles per frame (ours)
    smooth_beta: float = 20.0  # cut-off growth per inter-ocular distance per frame of speed
    device: str = "cpu"


@dataclass(frozen=True)
class Detection:
    box: Box  # x, y, w, h in full-frame pixels
    points: np.ndarray  # [5, 2]: image-left eye, image-right eye, nose tip, mouth left, right
    score: float  # O-Net face probability


def _detection(faces: Faces, k: int) -> Detection:
    x1, y1, x2, y2 = (float(v) for v in faces.boxes[k])
    return Detection((x1, y1, x2 - x1, y2 - y1), faces.points[k].copy(), float(faces.scores[k]))


def inter_ocular(points: np.ndarray) -> float:
    return float(np.hypot(*(points[1] - points[0])))


class FaceDetector:
    """Whole-frame search (`detect`) and following a known face (`follow`), one frame each."""

    def __init__(self, cfg: DetectorConfig = DetectorConfig()) -> None:
        self.cfg = cfg
        self.mtcnn = MTCNN(device=cfg.device)

    def detect(self, frame: np.ndarray) -> Detection | None:
        """The largest face in a BGR frame, or None."""
        min_face = max(self.cfg.min_face_px, self.cfg.min_face * min(frame.shape[:2]))
        faces = self.mtcnn.detect(frame, min_face)
        if not len(faces):
            return None
        widths = faces.boxes[:, 2] - faces.boxes[:, 0]
        return _detection(faces, int(np.argmax(widths)))

    def follow(self, frame: np.ndarray, last: Detection) -> Detection | None:
        """The face near `last` (O-Net on its box), or None when O-Net no longer sees one."""
        x, y, w, h = last.box
        faces = self.mtcnn.refine(frame, square(np.array([[x, y, x + w, y + h]], np.float32)))
        if faces.scores[0] < self.cfg.track_threshold:
            return None
        return _detection(faces, 0)


class OneEuro:
    """One Euro filter over a face's landmarks and box (`cfg`'s cut-off and speed gain)."""

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float = 0.3) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self.value: np.ndarray | None = None
        self.velocity: np.ndarray | None = None  # low-passed, per coordinate (signed)

    @staticmethod
    def _alpha(cutoff: float) -> float:  # one frame per step
        return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff))

    def __call__(self, d: Detection) -> Detection:
        x = np.concatenate([d.points.ravel(), np.asarray(d.box, np.float64)])
        if self.value is None or self.velocity is None:
            self.value, self.velocity = x, np.zeros_like(x)
            return d
        a_d = self._alpha(self.d_cutoff)
        self.velocity = a_d * (x - self.value) + (1 - a_d) * self.velocity
        speed = np.abs(self.velocity[:10]).mean() / max(inter_ocular(d.points), 1.0)
        a = self._alpha(self.min_cutoff + self.beta * speed)
        self.value = a * x + (1 - a) * self.value
        box = tuple(float(v) for v in self.value[10:])
        points = self.value[:10].reshape(5, 2).astype(np.float32)
        return Detection(box, points, d.score)  # type: ignore[arg-type]


class FaceTracker:
    """Faces of one stream of frames, in order: search, follow, smooth.

    `track` takes (payload, frame) pairs; a None frame (already aligned, a dataset box, an
    unreadable file) needs no face and passes through in order with a None detection, and the
    next frame is searched whole. `continuous=False` (unrelated images): every frame is
    searched whole and nothing is smoothed.
    """

    def __init__(
        self,
        cfg: DetectorConfig = DetectorConfig(),
        continuous: bool = True,
        detector: FaceDetector | None = None,
    ) -> None:
        self.detector = detector or FaceDetector(cfg)
        self.continuous = continuous
        self.filter = OneEuro(cfg.smooth_min_cutoff, cfg.smooth_beta)
        self.searches = 0  # whole-frame searches (the benchmark reports them)

    def track(
        self, items: Iterable[tuple[T, np.ndarray | None]]
    ) -> Iterator[tuple[T, Detection | None]]:
        last: Detection | None = None  # the previous frame's raw (unsmoothed) face
        self.filter.reset()
        for payload, frame in items:
            if frame is None:
                last = None
                self.filter.reset()
                yield payload, None
                continue
            found = self.detector.follow(frame, last) if last is not None else None
            if found is None:
                self.searches += 1
                found = self.detector.detect(frame)
                self.filter.reset()  # a new track: nothing to smooth with
            last = found if self.continuous else None
            if found is not None and self.continuous:
                yield payload, self.filter(found)
            else:
                yield payload, found
