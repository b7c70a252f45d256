"""Face detection that works offline with what OpenCV ships, fast enough not to bottleneck.

- OpenCV's frontal-face Haar cascade (alt2) on a downscaled, CLAHE-normalised grey frame:
  local contrast normalisation is what makes dark-skinned faces detectable (plain histogram
  equalisation misses many; see tests/test_synth_properties.py).
- Tracking: once a face is found, the next frame is searched only around it (a fraction of
  the pixels); a full-frame search runs when the track is lost or every `redetect_every`.
- Smoothing: the box is an exponential moving average while successive boxes overlap.
- Eyes come from a fixed place in the face box, calibrated on the cascade's boxes (median
  error ~10% of the inter-ocular distance on the synthetic set); in-plane roll is therefore
  not undone by this detector (YuNet's eye landmarks do).
- A better detector: cv2.FaceDetectorYN with a local ONNX model (`yunet_model`), which
  returns eyes directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# Where the eyes sit in an alt2 box (fractions of its width/height), measured on the
# synthetic set against rendered eye positions (bench/preprocess_speed.py prints the error).
EYE_X = (0.31, 0.68)
EYE_Y = 0.38


@dataclass(frozen=True)
class DetectorConfig:
    detect_width: int = 240  # frames are downscaled to this width for detection
    min_face: float = 0.12  # smallest face, as a fraction of the downscaled width
    min_neighbors: int = 4
    redetect_every: int = 30  # full-frame search this often even while tracking
    smoothing: float = 0.5  # weight of the new box in the moving average
    yunet_model: Path | None = None  # cv2.FaceDetectorYN ONNX file, used instead of Haar


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x, y, w, h in full-frame pixels
    eyes: np.ndarray  # [[lx, ly], [rx, ry]] in full-frame pixels (image left first)
    score: float


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-9)


def eyes_from_box(box: tuple[float, float, float, float]) -> np.ndarray:
    """Eye centres [[lx, ly], [rx, ry]] estimated from a face box (x, y, w, h)."""
    x, y, w, h = box
    return np.array(
        [[x + EYE_X[0] * w, y + EYE_Y * h], [x + EYE_X[1] * w, y + EYE_Y * h]], np.float32
    )


class FaceDetector:
    """Stateful per sequence: call `reset()` between sequences."""

    def __init__(self, cfg: DetectorConfig = DetectorConfig()) -> None:
        self.cfg = cfg
        cv2.setNumThreads(1)
        self.face = cv2.CascadeClassifier(
            cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml"
        )
        self.clahe = cv2.createCLAHE(2.0, (8, 8))
        self.yunet = None
        if cfg.yunet_model is not None:
            self.yunet = cv2.FaceDetectorYN.create(str(cfg.yunet_model), "", (320, 320), 0.6)
        self.reset()

    def reset(self) -> None:
        self.track: tuple[float, float, float, float] | None = None
        self.since_full = 0

    def detect(self, frame: np.ndarray) -> Detection | None:
        if self.yunet is not None:
            return self._yunet(frame)
        h, w = frame.shape[:2]
        scale = min(1.0, self.cfg.detect_width / w)
        small = (
            cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
            if scale < 1
            else frame
        )
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        found = None
        if self.track is not None and self.since_full < self.cfg.redetect_every:
            found = self._search(gray, scale, around=self.track)
            self.since_full += 1
        if found is None:
            found = self._search(gray, scale, around=None)
            self.since_full = 0
        if found is None:
            self.track = None
            return None
        box, score = found
        if self.track is not None and _iou(box, self.track) > 0.3:
            a = self.cfg.smoothing
            box = tuple(a * n + (1 - a) * o for n, o in zip(box, self.track, strict=True))  # type: ignore[assignment]
        self.track = box
        return Detection(box, eyes_from_box(box), score)

    def _search(
        self, gray: np.ndarray, scale: float, around: tuple[float, ...] | None
    ) -> tuple[tuple[float, float, float, float], float] | None:
        """Search the whole (downscaled) frame, or, while tracking, a window 1.8x the last box
        at 0.8-1.25x its size: a few scales of a small region instead of a dozen of the frame."""
        x0 = y0 = 0
        min_side = int(self.cfg.min_face * gray.shape[1])
        max_side = 0  # no limit
        region = gray
        if around is not None:
            bx, by, bw, bh = (v * scale for v in around)
            x0, y0 = max(0, int(bx - 0.4 * bw)), max(0, int(by - 0.4 * bh))
            x1, y1 = min(gray.shape[1], int(bx + 1.4 * bw)), min(gray.shape[0], int(by + 1.4 * bh))
            region = gray[y0:y1, x0:x1]
            min_side, max_side = max(min_side, int(0.8 * bw)), int(1.25 * bw) + 1
        if region.shape[0] < min_side or region.shape[1] < min_side:
            return None
        region = self.clahe.apply(region)  # local contrast: finds dark-skinned faces too
        boxes, _, weights = self.face.detectMultiScale3(
            region,
            1.1,
            self.cfg.min_neighbors,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side),
            outputRejectLevels=True,
        )
        if len(boxes) == 0:
            return None
        best = int(np.argmax(np.asarray(boxes)[:, 2]))  # the largest face: the subject
        x, y, w, h = (float(v) for v in boxes[best])
        box = ((x + x0) / scale, (y + y0) / scale, w / scale, h / scale)
        return box, float(np.asarray(weights).ravel()[best])

    def _yunet(self, frame: np.ndarray) -> Detection | None:
        assert self.yunet is not None
        h, w = frame.shape[:2]
        self.yunet.setInputSize((w, h))
        _, faces = self.yunet.detect(frame)
        if faces is None or len(faces) == 0:
            return None
        f = faces[int(np.argmax(faces[:, 2] * faces[:, 3]))]
        # YuNet: box, then right eye, left eye (subject's), nose, mouth corners, score.
        eyes = np.array([[f[4], f[5]], [f[6], f[7]]], np.float32)
        eyes = eyes[np.argsort(eyes[:, 0])]
        return Detection((float(f[0]), float(f[1]), float(f[2]), float(f[3])), eyes, float(f[14]))
