"""Face detection that works offline with what OpenCV ships, fast enough not to bottleneck.

- OpenCV's frontal-face Haar cascade (alt2) on a downscaled, CLAHE-normalised grey frame:
  local contrast normalisation is what makes dark-skinned faces detectable (plain histogram
  equalisation misses many; see tests/test_synth_properties.py).
- Local search: once a face is found, the next search looks only around it, at 0.8-1.25x its
  size (a few scales of a small region instead of a dozen of the whole frame); a full-frame
  search runs when that fails or every `redetect_every` searches.
- Keyframes (`FaceTracker`): on continuous video the detector runs on every `detect_every`-th
  frame only; when two successive keyframes find overlapping faces, the frames between them
  get the linearly interpolated box, otherwise each of them is searched near the faces found
  (never the whole frame: a face-less stretch would cost a full search per frame). Faces
  move little in a third of a second, and the search is most of the per-frame cost
  (bench/preprocess_speed.py).
- Smoothing: the emitted boxes and eyes are an exponential moving average while they overlap.
- Eyes come from a fixed place in the face box, calibrated on the cascade's boxes (median
  error ~10% of the inter-ocular distance on the synthetic set); in-plane roll is therefore
  not undone by this detector (YuNet's eye landmarks do).
- A better detector: cv2.FaceDetectorYN with a local ONNX model (`yunet_model`), which
  returns eyes directly.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

# Where the eyes sit in an alt2 box (fractions of its width/height), measured on the
# synthetic set against rendered eye positions (tests/test_detect.py bounds the error).
EYE_X = (0.31, 0.68)
EYE_Y = 0.38
KEYFRAME_IOU = 0.5  # successive keyframes this similar are interpolated between

T = TypeVar("T")
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class DetectorConfig:
    detect_width: int = 240  # frames are downscaled to this width for detection
    min_face: float = 0.12  # smallest face, as a fraction of the downscaled width
    min_neighbors: int = 4
    redetect_every: int = 30  # full-frame search this often even while a face is followed
    detect_every: int = 8  # keyframe interval on continuous video (1: search every frame)
    local_scale_step: float = 1.2  # cascade scale step of the local search (3 scales)
    full_scale_step: float = 1.2  # and of the whole-frame search (1.1: 2x slower, no more found)
    smoothing: float = 0.5  # weight of the new box in the moving average
    yunet_model: Path | None = None  # cv2.FaceDetectorYN ONNX file, used instead of Haar


@dataclass(frozen=True)
class Detection:
    box: Box  # x, y, w, h in full-frame pixels
    eyes: np.ndarray  # [[lx, ly], [rx, ry]] in full-frame pixels (image left first)
    score: float


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-9)


def _mix(new: Detection, old: Detection, a: float) -> Detection:
    """a * new + (1 - a) * old, box and eyes; the new score."""
    box = tuple(a * n + (1 - a) * o for n, o in zip(new.box, old.box, strict=True))
    return Detection(box, a * new.eyes + (1 - a) * old.eyes, new.score)  # type: ignore[arg-type]


def eyes_from_box(box: Box) -> np.ndarray:
    """Eye centres [[lx, ly], [rx, ry]] estimated from a face box (x, y, w, h)."""
    x, y, w, h = box
    return np.array(
        [[x + EYE_X[0] * w, y + EYE_Y * h], [x + EYE_X[1] * w, y + EYE_Y * h]], np.float32
    )


@cache
def _cascade() -> cv2.CascadeClassifier:
    """Loaded once per process (~10 ms, a cost per sequence otherwise); a task uses it from
    one thread at a time."""
    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml")


class FaceDetector:
    """One frame at a time; remembers the last face to search around it (`reset()` forgets)."""

    def __init__(self, cfg: DetectorConfig = DetectorConfig()) -> None:
        self.cfg = cfg
        cv2.setNumThreads(1)
        self.face = _cascade()
        self.clahe = cv2.createCLAHE(2.0, (8, 8))
        self.yunet = None
        if cfg.yunet_model is not None:
            self.yunet = cv2.FaceDetectorYN.create(str(cfg.yunet_model), "", (320, 320), 0.6)
        self.reset()

    def reset(self) -> None:
        self.last: Box | None = None
        self.since_full = 0

    def detect(self, frame: np.ndarray) -> Detection | None:
        """The face in a frame: searched around the last one, the whole frame if not there."""
        if self.yunet is not None:
            return self._yunet(frame)
        found = None
        if self.last is not None and self.since_full < self.cfg.redetect_every:
            found = self._search(frame, around=self.last)
            self.since_full += 1
        if found is None:
            found = self._search(frame, around=None)
            self.since_full = 0
        return self._found(found)

    def detect_near(self, frame: np.ndarray, box: Box) -> Detection | None:
        """The face around `box` only (no whole-frame search): for frames between keyframes."""
        if self.yunet is not None:
            return self._yunet(frame)
        return self._found(self._search(frame, around=box))

    def _found(self, found: tuple[Box, float] | None) -> Detection | None:
        self.last = None if found is None else found[0]
        return None if found is None else Detection(found[0], eyes_from_box(found[0]), found[1])

    def _search(self, frame: np.ndarray, around: Box | None) -> tuple[Box, float] | None:
        """Search the whole frame, or a window 1.8x the last box at 0.8-1.25x its size, on a
        grey copy downscaled to `detect_width`. Only the window is converted and downscaled
        (grey first, then a linear resize: 6x cheaper than INTER_AREA on BGR)."""
        h, w = frame.shape[:2]
        scale = min(1.0, self.cfg.detect_width / w)
        x0 = y0 = 0
        min_side = int(self.cfg.min_face * w * scale)
        max_side = 0  # no limit
        step = self.cfg.full_scale_step
        if around is not None:
            bx, by, bw, bh = around
            x0, y0 = max(0, int(bx - 0.4 * bw)), max(0, int(by - 0.4 * bh))
            x1, y1 = min(w, int(bx + 1.4 * bw)), min(h, int(by + 1.4 * bh))
            frame, step = frame[y0:y1, x0:x1], self.cfg.local_scale_step
            min_side, max_side = max(min_side, int(0.8 * bw * scale)), int(1.25 * bw * scale) + 1
        rh, rw = frame.shape[:2]
        if min(rh, rw) * scale < max(min_side, 1):  # also an empty window (box off-frame)
            return None
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if scale < 1:
            size = (max(1, round(rw * scale)), max(1, round(rh * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR)
        gray = self.clahe.apply(gray)  # local contrast: finds dark-skinned faces too
        boxes, _, weights = self.face.detectMultiScale3(
            gray,
            step,
            self.cfg.min_neighbors,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side),
            outputRejectLevels=True,
        )
        if len(boxes) == 0:
            return None
        best = int(np.argmax(np.asarray(boxes)[:, 2]))  # the largest face: the subject
        x, y, fw, fh = (float(v) / scale for v in boxes[best])
        return (x + x0, y + y0, fw, fh), float(np.asarray(weights).ravel()[best])

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


class FaceTracker:
    """Faces of one stream of frames, in order: keyframe search, interpolation, smoothing.

    `track` takes (payload, frame) pairs; a None frame (already aligned, a dataset box, an
    unreadable file) needs no face and passes through in order with a None detection. At most
    `detect_every` frames are held at a time, so memory does not grow with the video.
    """

    def __init__(
        self,
        cfg: DetectorConfig = DetectorConfig(),
        continuous: bool = True,
        detector: FaceDetector | None = None,
    ) -> None:
        self.detector = detector or FaceDetector(cfg)
        self.every = max(1, cfg.detect_every) if continuous else 1
        self.smoothing = cfg.smoothing
        self.continuous = continuous

    def track(
        self, items: Iterable[tuple[T, np.ndarray | None]]
    ) -> Iterator[tuple[T, Detection | None]]:
        self.detector.reset()
        self.emitted: Detection | None = None
        key: Detection | None = None  # the last keyframe's raw detection
        started = False  # a keyframe has been searched since the last break
        held: list[tuple[T, np.ndarray]] = []
        source = iter(items)
        while True:
            try:
                payload, frame = next(source)
            except StopIteration:
                break
            except Exception:  # a decode error: the frames read before it still come out
                yield from self._resolve(key, held)
                raise
            if frame is None:
                yield from self._resolve(key, held)
                held, started = [], False
                yield payload, None
                continue
            if not started:  # the first frame after a break is a keyframe
                key, started = self.detector.detect(frame), True
                yield payload, self._emit(key)
                continue
            held.append((payload, frame))
            if len(held) == self.every:
                key = yield from self._resolve(key, held)
                held = []
        yield from self._resolve(key, held)

    def _resolve(
        self, start: Detection | None, held: list[tuple[T, np.ndarray]]
    ) -> Generator[tuple[T, Detection | None], None, Detection | None]:
        """Detect the last held frame; interpolate the others from `start` to it when both
        found overlapping faces, else search each. Returns the last frame's raw detection."""
        if not held:
            return start
        end = self.detector.detect(held[-1][1])
        if start is not None and end is not None and _iou(start.box, end.box) >= KEYFRAME_IOU:
            score = min(start.score, end.score)
            for i, (payload, _) in enumerate(held[:-1], 1):
                between = replace(_mix(end, start, i / len(held)), score=score)
                yield payload, self._emit(between, smooth=False)  # already smooth
        else:  # a face lost, found or moved fast: search the frames near the known faces
            found = self._between(start, end, [frame for _, frame in held[:-1]])
            for (payload, _), one in zip(held, found, strict=False):
                yield payload, self._emit(one)
            self.detector.last = None if end is None else end.box  # search on from the end
        yield held[-1][0], self._emit(end)
        return end

    def _between(
        self, start: Detection | None, end: Detection | None, frames: list[np.ndarray]
    ) -> list[Detection | None]:
        """Search frames between keyframes, each only near a face found next to it (never the
        whole frame). A face lost (found at the start only) is followed forward until the
        first miss; one that appears (found at the end only) backward from the end."""
        found: list[Detection | None] = [None] * len(frames)
        if start is not None and end is not None:  # moved fast: near the last one, or the end
            prev = start
            for i, frame in enumerate(frames):
                found[i] = self.detector.detect_near(frame, prev.box)
                found[i] = found[i] or self.detector.detect_near(frame, end.box)
                prev = found[i] or prev
            return found
        order = range(len(frames)) if start is not None else reversed(range(len(frames)))
        near: Detection | None = start or end
        for i in order:
            if near is None or (near := self.detector.detect_near(frames[i], near.box)) is None:
                break
            found[i] = near
        return found

    def _emit(self, found: Detection | None, smooth: bool = True) -> Detection | None:
        """Smooth a searched frame's detection with the previous frame's, while they overlap
        (interpolated ones are smooth already: averaging them again only adds lag)."""
        last = self.emitted
        overlap = found is not None and last is not None and _iou(found.box, last.box) > 0.3
        if smooth and self.continuous and overlap:
            found = _mix(found, last, self.smoothing)  # type: ignore[arg-type]
        self.emitted = found
        return found
