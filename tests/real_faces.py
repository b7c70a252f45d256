"""Real photographs for the face front end's tests: portraits that installed packages ship
(scikit-image's astronaut, matplotlib's Grace Hopper), their eye centres annotated once by
hand, and transformed copies and videos whose eye positions follow by the known transform.

Hand annotation (zoomed 10x on a pixel grid, centre of the iris): see `PORTRAITS`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Photo:
    name: str
    image: np.ndarray  # BGR
    eyes: np.ndarray | None  # [2, 2] image-left eye, image-right eye; None: no face / unknown


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image[..., 2::-1])


def _grace_hopper() -> np.ndarray:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


# Eye centres annotated by hand, (x, y) in the original pixels, image-left eye first.
PORTRAITS = {
    "astronaut": (lambda: _skimage("astronaut"), [[203.0, 99.0], [245.0, 102.0]]),
    "grace_hopper": (_grace_hopper, [[220.0, 188.0], [303.0, 186.0]]),
}
FACELESS = ("coffee", "chelsea", "rocket", "coins")  # a cat among them


def portrait(name: str) -> Photo:
    load, eyes = PORTRAITS[name]
    return Photo(name, load(), np.array(eyes))


def faceless() -> list[Photo]:
    return [Photo(name, _skimage(name), None) for name in FACELESS]


def similarity(
    angle_deg: float, scale: float, shift: tuple[float, float], centre: tuple
) -> np.ndarray:
    """2x3: rotate by `angle_deg` (counter-clockwise on screen) and scale about `centre`,
    then shift."""
    m = cv2.getRotationMatrix2D(centre, angle_deg, scale)
    m[:, 2] += shift
    return m


def transformed(
    photo: Photo, m: np.ndarray, size: tuple[int, int], background: np.ndarray
) -> Photo:
    """The photo warped by `m` onto `background` (resized to `size`), eyes moved with it."""
    w, h = size
    canvas = cv2.resize(background, (w, h), interpolation=cv2.INTER_AREA)
    mask = cv2.warpAffine(np.full(photo.image.shape[:2], 255, np.uint8), m, (w, h))
    warped = cv2.warpAffine(photo.image, m, (w, h), flags=cv2.INTER_AREA)
    canvas[mask > 127] = warped[mask > 127]
    assert photo.eyes is not None
    eyes = photo.eyes @ m[:, :2].T + m[:, 2]
    return Photo(photo.name, canvas, eyes[np.argsort(eyes[:, 0])])


def variants(photo: Photo) -> Iterator[Photo]:
    """The photo rolled 15 and 30 degrees both ways, darkened, mirrored and shrunk to a
    ~60-px face, each with its eyes (image-left first)."""
    assert photo.eyes is not None
    h, w = photo.image.shape[:2]
    centre = tuple(photo.eyes.mean(0))
    bg = _skimage("coffee")
    for angle in (-30, -15, 15, 30):
        m = similarity(angle, 1.0, (0, 0), centre)
        yield Photo(f"{photo.name} roll {angle}", *_fields(transformed(photo, m, (w, h), bg)))
    dark = (255 * (photo.image / 255.0) ** 2.5).astype(np.uint8)  # gamma 2.5: a dim room
    yield Photo(f"{photo.name} dark", dark, photo.eyes)
    mirrored = photo.image[:, ::-1].copy()
    eyes = np.stack([w - 1 - photo.eyes[:, 0], photo.eyes[:, 1]], 1)[::-1]
    yield Photo(f"{photo.name} mirrored", mirrored, eyes)
    iod = float(np.hypot(*(photo.eyes[1] - photo.eyes[0])))
    face = 2.2 * iod  # a face is ~2.2 inter-ocular distances wide
    m = similarity(0, 60 / face, (0, 0), (0, 0))
    m[:, 2] = (320 - 60 / face * centre[0], 240 - 60 / face * centre[1])
    yield Photo(f"{photo.name} 60-px face", *_fields(transformed(photo, m, (640, 480), bg)))


def _fields(p: Photo) -> tuple[np.ndarray, np.ndarray | None]:
    return p.image, p.eyes


def moving_video(photo: Photo, frames: int = 60) -> list[Photo]:
    """640x480 frames of the photo, 0.8x, on a real background: it drifts across the frame
    (up to 6 px a frame), rolls between -30 and +30 degrees, grows and shrinks by a fifth and
    dims to half its brightness and back."""
    assert photo.eyes is not None
    bg = _skimage("coffee")
    centre = tuple(photo.eyes.mean(0))
    out = []
    for t in range(frames):
        phase = 2 * math.pi * t / frames
        scale = 0.8 * (1 + 0.2 * math.sin(2 * phase))
        m = similarity(30 * math.sin(phase), scale, (0, 0), centre)
        m[:, 2] += (320 - centre[0] + 90 * math.sin(phase), 220 - centre[1] + 30 * math.cos(phase))
        p = transformed(photo, m, (640, 480), bg)
        gain = 0.75 + 0.25 * math.cos(phase)
        out.append(Photo(f"{photo.name} t{t}", (p.image * gain).astype(np.uint8), p.eyes))
    return out


def eye_error(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean distance of the two eyes from the truth, in inter-ocular distances."""
    iod = float(np.hypot(*(truth[1] - truth[0])))
    return float(np.linalg.norm(found[:2] - truth, axis=1).mean() / iod)
