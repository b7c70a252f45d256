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

from clef_core.common.paths import missing
from faces.native import NativeOutput

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


SOI, EOI = b"\xff\xd8", b"\xff\xd9"  # a JPEG's first and last markers


def check_complete(source: Path | bytes, name: str) -> None:
    """Raise DecodeError when a JPEG ends before its end-of-image marker: a file cut short.
    OpenCV's imread decodes the part that is there and fills the rest grey, so a frame cut to
    a third would be kept as a whole frame (without a face, in practice). Cheap: the first and
    last bytes; only a file that has data after its image (some cameras append some) is
    decoded by PIL (at 1/8 scale, which still reads every byte) to tell."""
    if isinstance(source, Path):
        with source.open("rb") as f:
            head = f.read(2)
            f.seek(max(0, source.stat().st_size - 4096))
            tail = f.read()
    else:
        head, tail = source[:2], source[-4096:]
    if head != SOI or tail.rstrip(b"\x00").endswith(EOI):  # not a JPEG, or whole (padded)
        return
    from PIL import Image

    try:  # PIL raises on a premature end (unless a caller set LOAD_TRUNCATED_IMAGES)
        with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise DecodeError(f"{name}: JPEG cut short or damaged ({err})") from None


def read_image(path: Path, reduce: int = 1) -> np.ndarray:
    """A BGR image, decoded at 1/`reduce` scale (1, 2, 4 or 8)."""
    check_pixels(path, str(path))
    check_complete(path, str(path))
    with NativeOutput(str(path)) as native, native.caught():  # libjpeg's warnings: the log
        image = cv2.imread(str(path), REDUCED[reduce])
    if image is None:
        raise DecodeError(f"unreadable image {path}")
    return image


def decode_image_bytes(data: bytes, name: str, reduce: int = 1) -> np.ndarray:
    check_pixels(data, name)
    check_complete(data, name)
    with NativeOutput(name) as native, native.caught():
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
    for index, _, frame in iter_timed_video(path, backend, every):
        yield index, frame


def iter_timed_video(
    path: Path, backend: Backend = "auto", every: int = 1
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (0-based index, seconds, BGR frame) for every `every`-th frame, streaming.

    The seconds are the frame's presentation timestamp from the container, counted from the
    video stream's start: a variable-frame-rate video (phones, screen recordings) gets its
    real times, which index / average fps is not. Only a frame without a timestamp gets
    index / fps (nan when the fps is unknown too). Native decoders' messages go to the log
    (`faces.native`). Raises DecodeError after the last good frame if the file is truncated
    or unreadable.
    """
    if not path.is_file():
        raise DecodeError(missing(path, "video not found"))
    if backend == "auto":  # sequential reads: OpenCV; sparse reads: decord (STACK.md, bench/)
        backend = "opencv" if every <= 4 else "decord"
    decode = {"opencv": _opencv, "decord": _decord, "pyav": _pyav}[backend]
    with NativeOutput(str(path)) as native:
        yield from decode(path, every, native)


def seconds(pts: float | None, index: int, fps: float) -> float:
    """A frame's time: its timestamp where the container gave one, else index / fps."""
    if pts is not None:
        return pts
    return index / fps if fps > 0 else float("nan")


def _opencv(
    path: Path, every: int, native: NativeOutput
) -> Iterator[tuple[int, float, np.ndarray]]:
    with native.caught():
        cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        reason = native.last()
        raise DecodeError(f"cannot open video {path}" + (f": {reason}" if reason else ""))
    expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    index, last = 0, float("nan")
    try:
        while True:
            with native.caught():
                grabbed = cap.grab()  # every frame is decoded; only the kept ones converted
            if not grabbed:
                break
            msec = cap.get(cv2.CAP_PROP_POS_MSEC)  # its PTS from the stream's start; 0: none
            last = seconds(msec / 1000 if msec > 0 or index == 0 else None, index, fps)
            if index % every == 0:
                with native.caught():
                    ok, frame = cap.retrieve()
                if not ok:
                    break
                yield index, last, frame
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise DecodeError(f"{path}: decoded 0 of {expected} frames (truncated or corrupt)")
    if ended_early(index, expected, last, fps):
        raise ShortVideo(path, index, expected)


def ended_early(decoded: int, expected: int, last: float, fps: float) -> bool:
    """Whether a video stopped before its header's frame count with its last frame short of
    the end too. Where the container stores no count (Matroska, WebM) OpenCV's is duration
    x average fps: a variable-frame-rate video has fewer frames than that, all there, its
    last one at the end (within 1.5 frames of the rate: rounding and the last's duration)."""
    if expected <= 0 or decoded >= expected:
        return False
    return not (fps > 0 and last * fps >= expected - 2.5)


def _decord(
    path: Path, every: int, native: NativeOutput
) -> Iterator[tuple[int, float, np.ndarray]]:
    import decord

    try:
        with native.caught():
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as err:  # decord raises its own DECORDError without a public base class
        raise DecodeError(f"cannot open video {path}: {err}") from None
    n = len(reader)
    for index in range(0, n, every):
        try:
            with native.caught():
                frame = reader[index].asnumpy()
        except Exception as err:
            if index > 0:  # the frames before it were decoded
                raise ShortVideo(path, index, n) from err
            raise DecodeError(f"{path}: frame {index} of {n} unreadable: {err}") from None
        start = float(reader.get_frame_timestamp(index)[0])  # PTS from the stream's start
        yield index, start, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)


def _pyav(path: Path, every: int, native: NativeOutput) -> Iterator[tuple[int, float, np.ndarray]]:
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise DecodeError(f"cannot open video {path}: {err}") from None
    if not container.streams.video:
        container.close()
        raise DecodeError(f"{path}: no video stream in it")
    stream = container.streams.video[0]
    fps = float(stream.average_rate or 0)
    origin = stream.start_time or 0  # OpenCV and decord count from the stream's start too
    try:
        for index, frame in enumerate(container.decode(stream)):
            if index % every == 0:
                pts = None if frame.pts is None else float((frame.pts - origin) * stream.time_base)
                yield index, seconds(pts, index, fps), frame.to_ndarray(format="bgr24")
    except av.error.FFmpegError as err:
        raise DecodeError(f"{path}: decoding stopped: {err}") from None
    finally:
        container.close()
