"""Frame decoding: videos streamed frame by frame (never whole in memory), images from folders
and zips. Backends for video: OpenCV (fastest at sequential reads here), decord (fastest at
sparse access), PyAV; "auto" picks per access pattern (bench/preprocess_speed.py measures)."""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

Backend = Literal["auto", "opencv", "decord", "pyav"]


class DecodeError(Exception):
    """A video or image that cannot be (fully) decoded; frames read before it are kept."""


class ShortVideo(DecodeError):
    """A video that decoded some frames, then ended before the count its header promises:
    a file cut short or damaged, or (common in phone and screen recordings) a header that
    overstates. `clef predict` warns and keeps its rows; preprocessing counts it unreadable."""

    def __init__(self, path: Path, decoded: int, expected: int) -> None:
        self.decoded, self.expected = decoded, expected
        super().__init__(
            f"{path}: decoded {decoded} of the {expected} frames its header promises "
            "(truncated or corrupt, or a header that overstates)"
        )


# cv2 flags that decode a JPEG at 1/2, 1/4, 1/8 scale in the DCT domain: several times
# faster than a full decode, and each pixel is a block mean (antialiased).
REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


# Bombs (ours): an image is decoded only when its header promises at most this many pixels
# (50M: 3x a 24-megapixel photo, 35x a BP4D+ frame; a decoded one is then at most 150 MB),
# and a zip member is read only when it inflates to at most this many bytes (64 MiB: a
# BP4D+ frame's JPEG is ~0.2 MB). OpenCV's own cap is 2^30 pixels: 3 GB per image.
MAX_IMAGE_PIXELS = 50_000_000
MAX_MEMBER_BYTES = 64 * 2**20


def limit(name: str, default: int) -> int:
    """A size limit: $CLEF_<name> when set (read at each call, so Ray workers started with
    the variable follow it), else `default`."""
    value = os.environ.get(f"CLEF_{name}", "")
    return int(value) if value.strip() else default


def check_pixels(source: Path | bytes, name: str) -> None:
    """Raise DecodeError when the image's header promises more than $CLEF_MAX_IMAGE_PIXELS
    pixels; reads the header only. A format PIL cannot identify is left to OpenCV."""
    from PIL import Image, UnidentifiedImageError

    most = limit("MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS)
    try:
        with warnings.catch_warnings():  # PIL's bomb warning (over 89M pixels): said below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as image:
                width, height = image.size
        pixels, size = width * height, f"{width}x{height} pixels"
    except Image.DecompressionBombError as err:  # PIL's own cap (2 x 89M) came first
        found = re.search(r"\((\d+) pixels\)", str(err))  # its message names the count
        if not found or int(found[1]) <= most:  # ours raised past PIL's: PIL's word stands
            raise DecodeError(f"{name}: {err}") from None
        pixels, size = int(found[1]), f"{found[1]} pixels"
    except (UnidentifiedImageError, OSError, ValueError):
        return
    if pixels > most:
        raise DecodeError(
            f"{name}: image of {size}, over the limit of {most} ($CLEF_MAX_IMAGE_PIXELS); "
            "not decoded"
        )


def read_image(path: Path, reduce: int = 1) -> np.ndarray:
    """A BGR image, decoded at 1/`reduce` scale (1, 2, 4 or 8)."""
    check_pixels(path, str(path))
    image = cv2.imread(str(path), REDUCED[reduce])
    if image is None:
        raise DecodeError(f"unreadable image {path}")
    return image


def decode_image_bytes(data: bytes, name: str, reduce: int = 1) -> np.ndarray:
    check_pixels(data, name)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED[reduce])
    if image is None:
        raise DecodeError(f"unreadable image {name}")
    return image


def iter_video(
    path: Path, backend: Backend = "auto", every: int = 1
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (0-based index, BGR frame) for every `every`-th frame, streaming.

    Raises DecodeError after the last good frame if the file is truncated or unreadable.
    """
    if not path.is_file():
        raise DecodeError(f"video not found: {path}")
    if backend == "auto":  # sequential reads: OpenCV; sparse reads: decord (STACK.md, bench/)
        backend = "opencv" if every <= 4 else "decord"
    if backend == "opencv":
        yield from _opencv(path, every)
    elif backend == "decord":
        yield from _decord(path, every)
    else:
        yield from _pyav(path, every)


def _opencv(path: Path, every: int) -> Iterator[tuple[int, np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DecodeError(f"cannot open video {path}")
    expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    index = 0
    try:
        while True:
            if index % every:
                if not cap.grab():
                    break
            else:
                ok, frame = cap.read()
                if not ok:
                    break
                yield index, frame
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise DecodeError(f"{path}: decoded 0 of {expected} frames (truncated or corrupt)")
    if expected > 0 and index < expected:
        raise ShortVideo(path, index, expected)


def _decord(path: Path, every: int) -> Iterator[tuple[int, np.ndarray]]:
    import decord

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as err:  # decord raises its own DECORDError without a public base class
        raise DecodeError(f"cannot open video {path}: {err}") from None
    n = len(reader)
    for index in range(0, n, every):
        try:
            frame = reader[index].asnumpy()
        except Exception as err:
            if index > 0:  # the frames before it were decoded
                raise ShortVideo(path, index, n) from err
            raise DecodeError(f"{path}: frame {index} of {n} unreadable: {err}") from None
        yield index, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)


def _pyav(path: Path, every: int) -> Iterator[tuple[int, np.ndarray]]:
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise DecodeError(f"cannot open video {path}: {err}") from None
    try:
        for index, frame in enumerate(container.decode(video=0)):
            if index % every == 0:
                yield index, frame.to_ndarray(format="bgr24")
    except av.error.FFmpegError as err:
        raise DecodeError(f"{path}: decoding stopped: {err}") from None
    finally:
        container.close()
