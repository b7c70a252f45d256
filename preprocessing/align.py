"""Face alignment: a similarity transform that puts the eyes at fixed places in a square crop,
or a box crop when the eyes are unknown."""

from __future__ import annotations

import cv2
import numpy as np

# Eye centres in the aligned crop, as fractions of its side (the whole face, chin included).
LEFT_EYE = (0.36, 0.42)
RIGHT_EYE = (0.64, 0.42)


def eye_transform(eyes: np.ndarray, size: int) -> np.ndarray:
    """2x3 similarity mapping eyes [[lx, ly], [rx, ry]] (image left, right) onto the crop."""
    src = np.asarray(eyes, np.float64)
    dst = np.array([LEFT_EYE, RIGHT_EYE], np.float64) * size
    d_src, d_dst = src[1] - src[0], dst[1] - dst[0]
    scale = np.hypot(*d_dst) / max(np.hypot(*d_src), 1e-6)
    angle = np.arctan2(d_src[1], d_src[0]) - np.arctan2(d_dst[1], d_dst[0])
    c, s = scale * np.cos(-angle), scale * np.sin(-angle)
    rot = np.array([[c, -s], [s, c]])
    shift = dst.mean(0) - rot @ src.mean(0)
    return np.hstack([rot, shift[:, None]]).astype(np.float32)


def box_transform(
    box: tuple[float, float, float, float], size: int, margin: float = 0.0
) -> np.ndarray:
    """2x3 scale+shift mapping a face box (x, y, w, h), grown by `margin`, onto the crop."""
    x, y, w, h = box
    side = max(w, h) * (1 + margin)
    cx, cy = x + w / 2, y + h / 2
    scale = size / max(side, 1e-6)
    return np.array(
        [[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]], np.float32
    )


def warp(image: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """Apply a 2x3 transform into a size x size crop (edges replicated, never black bars)."""
    return cv2.warpAffine(
        image, transform, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def align_by_eyes(image: np.ndarray, eyes: np.ndarray, size: int) -> np.ndarray:
    return warp(image, eye_transform(eyes, size), size)
