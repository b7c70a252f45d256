"""Frame decoding: videos streamed frame by frame (never whole in memory), images from folders
and zips. Backends for video: OpenCV (fastest at sequential reads here), decord (fastest at
sparse access), PyAV; "auto" picks per access pattern (bench/preprocess_speed.py measures)."""

from __future__ import annotations

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


def read_image(path: Path, reduce: int = 1) -> np.ndarray:
    """A BGR image, decoded at 1/`reduce` scale (1, 2, 4 or 8)."""
    image = cv2.imread(str(path), REDUCED[reduce])
    if image is None:
        raise DecodeError(f"unreadable image {path}")
    return image


def decode_image_bytes(data: bytes, name: str, reduce: int = 1) -> np.ndarray:
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
