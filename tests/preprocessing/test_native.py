"""`faces.native`, the native decoders' fd-2 output kept off the console (#31 review): a
capture in one thread never takes another thread's Python stderr; a Ray task's decoder
lines come back with its sequence's result; no temporary file to capture into is no reason
to count a file as unreadable."""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from pathlib import Path

import cv2
import pytest

import faces.native as native
from faces.decode import read_image
from faces.native import NativeOutput


def _photo_jpeg() -> bytes:
    import matplotlib

    return (Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").read_bytes()


def _noisy_jpeg() -> bytes:
    """A whole JPEG that decodes, with bytes before its end marker libjpeg warns about
    ("Corrupt JPEG data: 2 extraneous bytes before marker 0xd9")."""
    data = _photo_jpeg()
    end = data.rindex(b"\xff\xd9")
    return data[:end] + b"\xff\xd4\x12\x34" + data[end:]


def test_another_threads_python_stderr_is_not_caught(
    capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`clef predict` decodes in a thread: while it holds fd 2, the main thread's warnings
    and stderr lines still reach the real stderr, and only native output is caught."""
    on_fd2 = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115  (Python's usual stderr)
    monkeypatch.setattr(sys, "stderr", on_fd2)
    handler = logging.StreamHandler(on_fd2)  # made before any capture, as `clef`'s are
    logger = logging.getLogger("tests.native.other_thread")
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "propagate", False)
    inside, done = threading.Event(), threading.Event()
    caught: list[str] = []

    def decode() -> None:
        with NativeOutput("video.mp4") as out, out.caught():
            os.write(2, b"moov atom not found\n")  # as FFmpeg does
            inside.set()
            done.wait(10)
        caught.extend(out.lines)

    thread = threading.Thread(target=decode)
    try:
        thread.start()
        assert inside.wait(10)
        print("python's own line", file=sys.stderr)
        logger.warning("a warning logged meanwhile")
        done.set()
        thread.join(10)
        assert caught == ["moov atom not found"]
        err = capfd.readouterr().err
        assert "python's own line" in err and "a warning logged meanwhile" in err
        assert "moov atom" not in err
    finally:
        done.set()
        logger.removeHandler(handler)
        if sys.stderr is not on_fd2:
            sys.stderr.close()  # the copy of fd 2 made for this test's stderr


def test_a_sequences_decoder_lines_come_back_with_its_result(tmp_path: Path) -> None:
    """`process_sequence` runs in a Ray worker, whose log goes nowhere: the lines travel in
    the result, for the driver to log."""
    from preprocessing.pipeline import PreprocessOptions, plan, process_sequence

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(_noisy_jpeg())
    opts = PreprocessOptions("video", tmp_path, tmp_path / "shards", image_size=112)
    (seq,), _ = plan(opts)
    result = process_sequence(opts, seq)
    assert result.frames == 1 and not result.unreadable and result.failed is None
    assert any(
        line.startswith(str(tmp_path / "photos" / "a.jpg"))
        and "extraneous bytes before marker" in line
        for line in result.decoder_output
    ), result.decoder_output


def test_the_driver_logs_what_a_sequence_brought_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="faces.decode")
    native.relog(["a.jpg: Corrupt JPEG data"])
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("faces.decode", logging.INFO, "a.jpg: Corrupt JPEG data")
    ]


def test_no_temporary_file_reads_without_capture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """/tmp full or no file descriptor left is the machine's fault, not the file's: the
    image still reads (its decoder's lines on stderr), never an OSError counted against it."""

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(native, "_sink", {}, raising=False)  # as in a fresh process
    monkeypatch.setattr(native.tempfile, "TemporaryFile", full)
    path = tmp_path / "a.jpg"
    path.write_bytes(_noisy_jpeg())
    image = read_image(path)
    assert image.shape == cv2.imread(str(path)).shape
    assert "extraneous bytes" in capfd.readouterr().err


def test_one_sink_each_file_gets_only_its_own_lines() -> None:
    with NativeOutput("a") as a, NativeOutput("b") as b:
        with a.caught():
            os.write(2, b"first\n")
        with b.caught():
            os.write(2, b"second\n")
        with a.caught():
            os.write(2, b"third\n")
    assert (a.lines, b.lines, a.last()) == (["first", "third"], ["second"], "third")
