"""A sequence of frames: one subject in front of a cluttered background, moving, lit, blinking,
with sensor noise and blur, and a small share of frames where no face can be seen.

Per sequence the expensive parts (background, shaded texture, noise tiles) are built once;
per frame only the moving features are drawn and the face patch warped into place, which is
what keeps rendering fast (bench/synth_speed.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import cv2
import numpy as np

from synthetic.face import CX, CY, PATCH_H, PATCH_W, draw_features, geometry, texture
from synthetic.identity import Identity

NO_FACE_SHARE = 0.03  # share of frames with no detectable face


@dataclass(frozen=True)
class FrameTruth:
    visible: bool  # a face can be seen (not turned away, occluded or out of frame)
    box: tuple[float, float, float, float]  # face x, y, w, h in the frame (head ellipse)
    eyes: tuple[float, float, float, float]  # left x, y, right x, y in the frame


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Indoor-like clutter: a lit gradient wall with random shapes, lightly blurred."""
    base = rng.uniform(60, 200, 3)
    ramp = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(0.9, 1.2), width, dtype=np.float32)
    img = (base[None, None, :] * ramp[None, :, None]).repeat(height, 0)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(6, 14))):
        color = rng.uniform(20, 235, 3).tolist()
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(
                img,
                (x, y),
                (x + int(rng.integers(20, width // 3)), y + int(rng.integers(20, height // 2))),
                color,
                -1,
            )
        elif kind == 1:
            cv2.circle(img, (x, y), int(rng.integers(8, height // 6)), color, -1, cv2.LINE_AA)
        else:
            cv2.line(
                img,
                (x, y),
                (int(rng.integers(0, width)), int(rng.integers(0, height))),
                color,
                int(rng.integers(1, 6)),
                cv2.LINE_AA,
            )
    return cv2.GaussianBlur(img, (0, 0), 1.2)


def _smooth_walk(rng: np.random.Generator, n: int, amplitude: float, period: float) -> np.ndarray:
    """A smooth random motion: a sum of two slow sinusoids with random phases."""
    t = np.arange(n, dtype=np.float32)
    out = np.zeros(n, np.float32)
    for k in (1.0, 2.7):
        out += (
            np.sin(2 * np.pi * t / (period * rng.uniform(0.7, 1.3) / k) + rng.uniform(0, 6.3)) / k
        )
    return amplitude * out / 1.37


def _events(rng: np.random.Generator, n: int, share: float, lo: int, hi: int) -> np.ndarray:
    """A boolean mask covering ~`share` of n frames on average, in runs of lo..hi frames.

    The number of runs is Poisson, so short sequences get the same share on average (most
    have none) instead of at least one run each.
    """
    mask = np.zeros(n, bool)
    for _ in range(int(rng.poisson(share * n / ((lo + hi) / 2)))):
        length = int(rng.integers(lo, hi + 1))
        start = int(rng.integers(0, max(1, n - length + 1)))
        mask[start : start + length] = True
    return mask


@lru_cache(maxsize=16)
def _noise_tiles(height: int, width: int, sigma: int) -> tuple[np.ndarray, np.ndarray]:
    """Sensor-noise tiles shared by all sequences of one size and level (read at random offsets).

    Two one-sided tiles (added, then subtracted) make zero-mean noise with uint8 maths. Drawn
    from a fixed seed, so output stays deterministic; built once per process, not per sequence.
    """
    rng = np.random.default_rng(sigma)
    noise = rng.standard_normal((2, height + 64, width + 64, 3), dtype=np.float32) * sigma
    tiles = np.clip(noise, 0, 255).astype(np.uint8)
    return tiles[0], tiles[1]


class SequenceRenderer:
    """Renders frame i of one subject's sequence given that frame's AU intensities."""

    def __init__(
        self,
        idt: Identity,
        rng: np.random.Generator,
        n_frames: int,
        size: tuple[int, int],
        no_face_share: float = NO_FACE_SHARE,
        light: tuple[float, float] | None = None,
    ) -> None:
        self.idt, self.width, self.height = idt, size[0], size[1]
        self.geo = geometry(idt)
        self.bg = background(rng, self.width, self.height)
        if light is None:  # key-light direction, fixed for the sequence
            light = (float(rng.uniform(-1, 1)), float(rng.uniform(-0.6, 0.3)))
        self.tex, self.mask = texture(idt, light)
        n = n_frames
        # Face height ~45-60% of the frame; centre wanders; roll up to ~15 degrees.
        self.scale = (self.height * rng.uniform(0.45, 0.6) / (2 * self.geo.b)) * (
            1 + _smooth_walk(rng, n, 0.06, 90)
        )
        self.cx = self.width * (0.5 + rng.uniform(-0.08, 0.08)) + _smooth_walk(
            rng, n, self.width * 0.06, 70
        )
        self.cy = self.height * (0.52 + rng.uniform(-0.04, 0.04)) + _smooth_walk(
            rng, n, self.height * 0.04, 60
        )
        self.roll = _smooth_walk(rng, n, float(rng.uniform(4, 15)), 80)
        self.yaw = _smooth_walk(rng, n, float(rng.uniform(0.05, 0.3)), 100)
        self.gaze = _smooth_walk(rng, n, 0.8, 40)
        self.gain = 1 + _smooth_walk(rng, n, float(rng.uniform(0.03, 0.12)), 50)
        self.blink = _events(rng, n, 0.04, 2, 3)
        self.blur = _events(rng, n, 0.12, 1, 4)
        self.no_face = (
            _events(rng, n, no_face_share, 2, 5) if no_face_share > 0 else np.zeros(n, bool)
        )
        self.no_face_kind = rng.integers(0, 3, n)  # 0 turned away, 1 occluded, 2 out of frame
        self.hand = (np.array(idt.skin) * rng.uniform(0.8, 1.05)).tolist()
        self.noise_pos, self.noise_neg = _noise_tiles(
            self.height, self.width, int(rng.integers(2, 7))
        )
        self.rng = rng

    @cached_property
    def back(self) -> np.ndarray:
        """The patch seen when the head is turned away (hair over the whole head)."""
        back = self.tex.copy()
        head = np.zeros(self.mask.shape, np.uint8)
        cv2.ellipse(
            head, (int(CX), int(CY)), (int(self.geo.a), int(self.geo.b)), 0, 0, 360, 255, -1
        )
        back[head > 0] = np.array(self.idt.hair, np.uint8)
        return back

    def _affine(self, i: int) -> np.ndarray:
        s = float(self.scale[i])
        m = cv2.getRotationMatrix2D((CX, CY), float(self.roll[i]), s)
        m[0, :] *= [1 - 0.25 * abs(float(self.yaw[i])), 1, 1]  # foreshortening of a turned head
        m[:, 2] += [self.cx[i] - CX, self.cy[i] - CY]
        if self.no_face[i] and self.no_face_kind[i] == 2:  # out of frame
            m[0, 2] += -self.width * 0.62 if self.cx[i] < self.width / 2 else self.width * 0.62
        return m

    def render(self, i: int, au: np.ndarray) -> tuple[np.ndarray, FrameTruth]:
        frame = self.bg.copy()
        m = self._affine(i)
        away = bool(self.no_face[i] and self.no_face_kind[i] == 0)
        if away:
            patch, eyes = self.back, np.array([[CX - 30, CY], [CX + 30, CY]], np.float32)
        else:
            patch = self.tex.copy()
            eyes = draw_features(
                patch,
                self.idt,
                au,
                float(self.yaw[i]) * 3,
                1.0 if self.blink[i] else 0.0,
                float(self.gaze[i]),
            )
        self._composite(frame, patch, m, float(self.gain[i]))
        g = self.geo
        corners = (
            np.array(
                [
                    [CX - g.a, CY - g.b, 1],
                    [CX + g.a, CY - g.b, 1],
                    [CX + g.a, CY + g.b, 1],
                    [CX - g.a, CY + g.b, 1],
                ],
                np.float32,
            )
            @ m.T
        )
        x0, y0 = corners.min(0)
        x1, y1 = corners.max(0)
        eyes_f = eyes @ m[:, :2].T + m[:, 2]
        if self.no_face[i] and self.no_face_kind[i] == 1:  # a hand over the face
            cv2.ellipse(
                frame,
                (int((x0 + x1) / 2), int(y0 + 0.55 * (y1 - y0))),
                (int(0.5 * (x1 - x0)), int(0.42 * (y1 - y0))),
                10,
                0,
                360,
                self.hand,
                -1,
                cv2.LINE_AA,
            )
        self._camera(frame, i)
        truth = FrameTruth(
            visible=not bool(self.no_face[i]),
            box=(float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
            eyes=(
                float(eyes_f[0, 0]),
                float(eyes_f[0, 1]),
                float(eyes_f[1, 0]),
                float(eyes_f[1, 1]),
            ),
        )
        return frame, truth

    def _composite(self, frame: np.ndarray, patch: np.ndarray, m: np.ndarray, gain: float) -> None:
        """Warp the patch into the frame under exposure `gain`, touching only what it covers."""
        corners = (
            np.array(
                [[0, 0, 1], [PATCH_W, 0, 1], [PATCH_W, PATCH_H, 1], [0, PATCH_H, 1]], np.float32
            )
            @ m.T
        )
        x0, y0 = np.floor(corners.min(0)).astype(int)
        x1, y1 = np.ceil(corners.max(0)).astype(int)
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.width), min(y1, self.height)
        if x1 <= x0 or y1 <= y0:
            return
        local = m.copy()
        local[:, 2] -= [x0, y0]
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpAffine(patch, local, size, flags=cv2.INTER_LINEAR)
        cv2.convertScaleAbs(warped, warped, alpha=gain)  # the face's exposure drifts
        alpha = cv2.warpAffine(self.mask, local, size, flags=cv2.INTER_NEAREST)
        cv2.copyTo(warped, alpha, frame[y0:y1, x0:x1])  # in place, ~100x faster than np.copyto

    def _camera(self, frame: np.ndarray, i: int) -> None:
        """Occasional blur and sensor noise (in place)."""
        if self.blur[i]:
            k = 3 + 2 * int(self.rng.integers(0, 2))
            cv2.GaussianBlur(frame, (k, k), 0, dst=frame)
        ox, oy = int(self.rng.integers(0, 64)), int(self.rng.integers(0, 64))
        h, w = self.height, self.width
        cv2.add(frame, self.noise_pos[oy : oy + h, ox : ox + w], dst=frame)
        cv2.subtract(frame, self.noise_neg[oy : oy + h, ox : ox + w], dst=frame)
