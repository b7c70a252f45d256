"""Frame decoding on hostile real inputs (issue #31): a variable-frame-rate video gets the
container's timestamps from every backend and through `clef predict`'s reading, not index /
average fps; a real photograph's JPEG cut to a third is unreadable (never a whole grey-filled
frame), while one with data after its end marker still reads; FFmpeg's "moov atom not found"
on a truncated mp4 goes to the log, never to the console's stderr."""

from __future__ import annotations

import fractions
import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from faces.decode import DecodeError, decode_image_bytes, iter_timed_video, read_image
from tests.real_faces import moving_video, portrait

# Frame times of a variable-frame-rate clip: bursts and a 8.5-second gap (the example
# starts 0, 0.16, 0.96 ... 13.5 s, written as 0, 0.07, 0.14 ... by index / fps).
TIMES = [0.0, 0.16, 0.96, 1.0, 2.5, 2.54, 5.0, 13.5]


def write_video(path: Path, times: list[float]) -> Path:
    """H.264 frames of a real portrait moving, each shown at its time in `times` (PyAV, with
    chosen presentation timestamps in milliseconds); the stream's nominal rate says 25 fps."""
    import av

    ms = fractions.Fraction(1, 1000)
    frames = moving_video(portrait("astronaut"), len(times))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.time_base = ms
        for t, photo in zip(times, frames, strict=True):
            small = cv2.resize(photo.image, (320, 240), interpolation=cv2.INTER_AREA)
            frame = av.VideoFrame.from_ndarray(small, format="bgr24")
            frame.pts, frame.time_base = round(t * 1000), ms
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def vfr_videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("vfr")
    return [write_video(folder / f"vfr.{ext}", TIMES) for ext in ("mp4", "mkv")]


@pytest.mark.parametrize("backend", ["opencv", "decord", "pyav"])
def test_every_backend_gives_a_variable_frame_rate_video_its_real_times(
    vfr_videos: list[Path], backend: str
) -> None:
    for video in vfr_videos:  # mp4 (the header's fps: the mean), mkv (the header says 25)
        times = [t for _, t, _ in iter_timed_video(video, backend, every=1)]  # type: ignore[arg-type]
        assert times == pytest.approx(TIMES, abs=1e-3), (video.name, times)
        sparse = [(i, t) for i, t, _ in iter_timed_video(video, backend, every=3)]  # type: ignore[arg-type]
        assert sparse == [(i, pytest.approx(TIMES[i], abs=1e-3)) for i in (0, 3, 6)]


def test_a_video_starting_late_is_timed_from_its_first_frame(tmp_path: Path) -> None:
    """A stream whose first timestamp is 1.5 s (cut from a longer recording): every backend
    counts from the stream's start, as OpenCV and decord do by themselves."""
    video = write_video(tmp_path / "late.mp4", [1.5, 1.6, 3.0])
    for backend in ("opencv", "decord", "pyav"):
        times = [t for _, t, _ in iter_timed_video(video, backend)]  # type: ignore[arg-type]
        assert times == pytest.approx([0.0, 0.1, 1.5], abs=1e-3), backend


@pytest.mark.parametrize("every", [1, 5])  # 1: OpenCV reads it, 5: decord (sparse)
def test_predict_writes_the_containers_times(vfr_videos: list[Path], every: int) -> None:
    from flows.predict import _frames

    meta: dict[str, list] = {"index": [], "time": [], "file": [], "unreadable": []}
    frames = list(_frames([vfr_videos[1]], every, meta))
    assert len(frames) == len(meta["time"]) == len(range(0, len(TIMES), every))
    assert meta["time"] == pytest.approx(TIMES[::every], abs=1e-3)


def _photo_jpeg() -> bytes:
    """A real photograph's own JPEG file (matplotlib's Grace Hopper), as shipped."""
    import matplotlib

    return (Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").read_bytes()


def test_a_jpeg_cut_to_a_third_is_unreadable(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    data = _photo_jpeg()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    assert cv2.imread(str(cut)) is not None  # what OpenCV alone does: a grey-filled frame
    assert "Premature end of JPEG" in capfd.readouterr().err  # and libjpeg's line on stderr
    for reduce in (1, 2):
        with pytest.raises(DecodeError, match="cut short"):
            read_image(cut, reduce)
    with pytest.raises(DecodeError, match="cut short"):
        decode_image_bytes(data[: len(data) // 3], "F001/T1/0001.jpg")  # a zip member's bytes
    assert "Premature end of JPEG" not in capfd.readouterr().err


def test_a_whole_jpeg_reads_with_or_without_data_after_its_end(tmp_path: Path) -> None:
    data = _photo_jpeg()
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(data)
    padded = tmp_path / "padded.jpg"  # data after the end marker, as some cameras write
    padded.write_bytes(data + b"\x00" * 64 + b"TRAILER" * 200)
    expected = cv2.imread(str(whole))
    assert np.array_equal(read_image(whole), expected)
    assert np.array_equal(read_image(padded), expected)
    assert np.array_equal(decode_image_bytes(padded.read_bytes(), "padded.jpg"), expected)


def test_a_cut_jpeg_in_a_folder_is_counted_unreadable(tmp_path: Path) -> None:
    """Through the reader preprocessing uses: the frame is an error row, not an image."""
    from preprocessing.readers.video import VideoFolderReader

    data = _photo_jpeg()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(data)
    (tmp_path / "photos" / "b.jpg").write_bytes(data[: len(data) // 3])
    reader = VideoFolderReader(tmp_path)
    (seq,) = reader.sequences()
    items = list(reader.frames(seq))
    assert [i.image is not None for i in items] == [True, False]
    assert items[1].error is not None and "b.jpg: JPEG cut short" in items[1].error


@pytest.fixture(scope="module")
def cut_mp4(vfr_videos: list[Path]) -> Path:
    """The mp4 cut in half: its index (the moov atom, written last) is gone."""
    data = vfr_videos[0].read_bytes()
    cut = vfr_videos[0].with_name("cut.mp4")
    cut.write_bytes(data[: len(data) // 2])
    return cut


@pytest.mark.parametrize("backend", ["opencv", "decord"])  # PyAV prints nothing by itself
def test_decoder_noise_goes_to_the_log_not_stderr(
    cut_mp4: Path, backend: str, capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="faces.decode")
    with pytest.raises(DecodeError, match="cannot open video"):
        list(iter_timed_video(cut_mp4, backend))  # type: ignore[arg-type]
    assert "moov atom" not in capfd.readouterr().err
    assert any("moov atom not found" in r.getMessage() for r in caplog.records)
    print("after", file=sys.stderr)  # stderr is stderr again
    assert capfd.readouterr().err == "after\n"


def test_the_clef_log_file_gets_the_decoder_noise(cut_mp4: Path, tmp_path: Path) -> None:
    """In a process set up as the `clef` commands are (`quiet_libraries`): nothing on the
    console's stderr, the decoder's line in the log file, the reason in the error."""
    log = tmp_path / "clef.log"
    script = (
        "import sys; from pathlib import Path\n"
        "from flows.console import quiet_libraries\n"
        "from faces.decode import DecodeError, iter_video\n"
        f"quiet_libraries(Path({str(log)!r}), ray=False, prefect=False)\n"
        f"try: list(iter_video(Path({str(cut_mp4)!r})))\n"
        "except DecodeError as err: print(err)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parents[2])  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert "moov atom not found" in run.stdout  # the decoder's reason, in the one line
    assert "moov atom not found" in log.read_text()
