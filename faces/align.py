"""Face alignment: a similarity transform (rotation, uniform scale, shift) that puts a face's 5
landmarks as near as possible (least squares) to a fixed template in a square crop, so roll is
undone and every crop frames the face the same way; or a box crop when a dataset gives a box."""

from __future__ import annotations

import math

import cv2
import numpy as np

# The 5-point template, as fractions of the crop's side, in the landmark order (image-left
# eye, image-right eye, nose tip, mouth left, mouth right). Ours: ArcFace's 112-px template
# (Deng et al., CVPR 2019) made left-right symmetric and scaled about its eye centre so the
# eyes sit 0.28 of the side apart on a line 0.42 down: the whole face, brows to chin, as
# facial action coding needs (ArcFace's own crop cuts the forehead and chin).
TEMPLATE = np.array(
    [[0.36, 0.42], [0.64, 0.42], [0.50, 0.58], [0.384, 0.745], [0.616, 0.745]], np.float64
)
LEFT_EYE, RIGHT_EYE = tuple(TEMPLATE[0]), tuple(TEMPLATE[1])


def face_transform(points: np.ndarray, size: int) -> np.ndarray:
    """2x3 least-squares similarity mapping 5 landmarks [5, 2] onto the template of a crop.

    In complex numbers a similarity is z -> a z + b; the least-squares a is
    sum(conj(s) d) / sum(|s|^2) over the centred points (Umeyama 1991, in 2D), which cannot
    reflect the face."""
    src = np.asarray(points, np.float64)
    src = src[:, 0] + 1j * src[:, 1]
    dst = TEMPLATE[:, 0] * size + 1j * TEMPLATE[:, 1] * size
    s, d = src - src.mean(), dst - dst.mean()
    a = np.sum(np.conj(s) * d) / max(float(np.sum(np.abs(s) ** 2)), 1e-9)
    b = dst.mean() - a * src.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], np.float32)


def eye_transform(eyes: np.ndarray, size: int) -> np.ndarray:
    """2x3 similarity mapping eyes [[lx, ly], [rx, ry]] (image left, right) onto the crop."""
    (lx, ly), (rx, ry) = (map(float, e) for e in eyes)  # plain floats: runs once per frame
    dx, dy = (RIGHT_EYE[0] - LEFT_EYE[0]) * size, (RIGHT_EYE[1] - LEFT_EYE[1]) * size
    scale = math.hypot(dx, dy) / max(math.hypot(rx - lx, ry - ly), 1e-6)
    angle = math.atan2(ry - ly, rx - lx) - math.atan2(dy, dx)
    c, s = scale * math.cos(angle), scale * math.sin(-angle)
    mx, my = (LEFT_EYE[0] + RIGHT_EYE[0]) * size / 2, (LEFT_EYE[1] + RIGHT_EYE[1]) * size / 2
    sx, sy = (lx + rx) / 2, (ly + ry) / 2
    return np.array([[c, -s, mx - (c * sx - s * sy)], [s, c, my - (s * sx + c * sy)]], np.float32)


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
    """Apply a 2x3 transform into a size x size crop (edges replicated, never black bars).

    A crop that shrinks its source 2x or more first averages it over whole blocks
    (`_box_shrink`): bilinear sampling alone would skip source pixels and alias fine texture
    (a real BP4D face is ~3x the crop). Otherwise a transform without rotation whose source
    square lies inside the image is a crop and a resize: half the cost of warpAffine, the
    same pixels up to a rounding of the crop's corner (under one source pixel)."""
    shrink = 1 / max(math.hypot(transform[0, 0], transform[1, 0]), 1e-6)  # source px per crop px
    if shrink >= 2:
        image, transform = _box_shrink(image, transform, size, 2 ** int(math.log2(shrink)))
    else:
        (a, b, tx), (c, d, ty) = transform.tolist()
        if b == 0 and c == 0 and a == d and a > 0:
            x0, y0, side = round(-tx / a), round(-ty / a), round(size / a)
            h, w = image.shape[:2]
            if x0 >= 0 and y0 >= 0 and x0 + side <= w and y0 + side <= h and side > 0:
                roi = image[y0 : y0 + side, x0 : x0 + side]
                return cv2.resize(roi, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.warpAffine(
        image, transform, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def _box_shrink(
    image: np.ndarray, transform: np.ndarray, size: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The part of `image` under the crop averaged over k x k blocks (k: the power of two at
    or under the source pixels per crop pixel), with the transform that maps it onto the same
    crop: afterwards a crop pixel spans one to two block pixels, so bilinear sampling touches
    every one. Only the region under the crop is read, and halved log2(k) times: OpenCV's 2x
    INTER_AREA is its fast path (0.3 ms for 840 px; one 3x or 4x step: 1.5-2 ms)."""
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    back = cv2.invertAffineTransform(transform.astype(np.float64))
    source = corners @ back[:, :2].T + back[:, 2]
    h, w = image.shape[:2]
    x0, y0 = (max(0, int(v) - k) for v in source.min(axis=0))
    x1, y1 = (min(n, int(v) + k + 1) for v, n in zip(source.max(axis=0), (w, h), strict=True))
    x1, y1 = x0 + (x1 - x0) // k * k, y0 + (y1 - y0) // k * k  # whole blocks only
    if x1 <= x0 or y1 <= y0:  # the crop lies outside the image: nothing to average
        return image, transform
    small = image[y0:y1, x0:x1]
    while small.shape[1] > (x1 - x0) // k:  # 2 x 2 means of 2 x 2 means: k x k means
        half = (small.shape[1] // 2, small.shape[0] // 2)
        small = cv2.resize(small, half, interpolation=cv2.INTER_AREA)
    # Block j's centre is source pixel x0 + j*k + (k-1)/2: compose the transform with that.
    offset = np.array([x0 + (k - 1) / 2, y0 + (k - 1) / 2])
    linear = transform[:, :2].astype(np.float64)
    shrunk = np.hstack([linear * k, (linear @ offset + transform[:, 2])[:, None]])
    return small, shrunk.astype(np.float32)


def align_by_eyes(image: np.ndarray, eyes: np.ndarray, size: int) -> np.ndarray:
    """A crop from the eyes alone (the synthetic generator's aligned FER layouts)."""
    return warp(image, eye_transform(eyes, size), size)


def align_face(image: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """The face with landmarks `points` aligned to the template in a size x size crop."""
    return warp(image, face_transform(points, size), size)
