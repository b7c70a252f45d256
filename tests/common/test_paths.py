"""Symlink loops named as such (issue #31: "no such file" was said of them, and one under a
dataset root crashed the manifest's input fingerprint): the helper on real links, and where a
user meets it, `clef predict`'s inputs, a dataset root and a preprocessing run's issues."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clef_core.common.errors import ClefError
from clef_core.common.paths import missing, symlink_loop, symlink_loops


@pytest.fixture
def links(tmp_path: Path) -> Path:
    """a <-> b (a loop of two), self -> self, dangling -> nowhere (missing, not a loop), and
    sub/up -> .. (a cycle of folders that resolves: not a loop)."""
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    (tmp_path / "self").symlink_to("self")
    (tmp_path / "dangling").symlink_to("nowhere")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to("..")
    (tmp_path / "sub" / "loop.mp4").symlink_to("loop.mp4")
    return tmp_path


def test_loops_are_told_from_missing_files(links: Path) -> None:
    assert [symlink_loop(links / n) for n in ("a", "self", "dangling", "sub", "nothing")] == [
        True, True, False, False, False
    ]  # fmt: skip
    assert missing(links / "a") == f"symlink loop at {links / 'a'}"
    assert missing(links / "dangling") == f"{links / 'dangling'}: no such file or folder"
    assert symlink_loops(links) == [
        links / "a",
        links / "b",
        links / "self",
        links / "sub/loop.mp4",
    ]


def test_predict_names_a_loop_given_or_found_in_a_folder(links: Path) -> None:
    from flows.predict import expand

    items, problems = expand([links / "self", links / "sub"])
    assert items == []
    assert problems[0] == f"symlink loop at {links / 'self'}"
    assert f"symlink loop at {links / 'sub/loop.mp4'}; not read" in problems


def test_a_dataset_root_that_is_a_loop_is_named(links: Path) -> None:
    from preprocessing.pipeline import PreprocessOptions, plan

    with pytest.raises(ClefError, match=r"symlink loop at .*self$"):
        plan(PreprocessOptions("video", links / "self", links / "out"))


def test_a_loop_under_a_dataset_root_is_an_issue_of_the_run(
    synth_root: Path, tmp_path: Path
) -> None:
    """A folder of videos with a loop beside the video: the video's shard is written, the
    loop is one issue line (the preprocess summary prints them), and nothing crashes."""
    from tests.conftest import run_inline

    root = tmp_path / "videos"
    root.mkdir()
    shutil.copy(synth_root / "videos" / "clip_01.mp4", root)
    (root / "clip_02.mp4").symlink_to("clip_02.mp4")
    rows, manifest = run_inline("video", root, tmp_path / "shards")
    assert rows and manifest.issues == [f"symlink loop at {root / 'clip_02.mp4'}; not read"]
