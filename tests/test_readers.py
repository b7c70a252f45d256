"""Dataset readers against headers the real releases use: the BP4D+ AU_OCC frame column is read
by position whatever its name, and a file whose first column is not frame numbers is refused
with a message instead of keying frames by an AU's values."""

from __future__ import annotations

import shutil
from pathlib import Path

from preprocessing.readers.bp4d import BP4DPlusReader


def _with_header(synth_root: Path, tmp_path: Path, first: str | None) -> tuple[Path, Path]:
    """A copy of the synthetic BP4D+ with one label file's frame column renamed to `first`
    (None: the frame column removed)."""
    root = tmp_path / "BP4D+"
    shutil.copytree(synth_root / "BP4D+", root)
    path = sorted((root / "AUCoding/AU_OCC").glob("*.csv"))[0]
    lines = path.read_text().splitlines()
    if first is None:
        lines = [line.split(",", 1)[1] for line in lines]
    else:
        lines[0] = first + lines[0][lines[0].index(",") :]
    path.write_text("\n".join(lines) + "\n")
    return root, path


def test_an_ambiguous_numeric_frame_header_is_read_by_position(
    synth_root: Path, tmp_path: Path
) -> None:
    expected = BP4DPlusReader(synth_root / "BP4D+")
    for first in ("1", "0", ""):  # "1,1,2,4,...": the first "1" is the frame column
        root, path = _with_header(synth_root, tmp_path / repr(first), first)
        subject, task = path.stem.split("_")
        reader = BP4DPlusReader(root)
        labels = reader.labels(subject, task)
        assert labels == expected.labels(subject, task) and len(labels) > 10
        assert min(labels) > 1  # frame numbers, not AU 1's zeros and ones


def test_a_label_file_without_frame_numbers_is_refused_with_a_message(
    synth_root: Path, tmp_path: Path
) -> None:
    root, path = _with_header(synth_root, tmp_path, None)  # first column is now AU 1
    subject, task = path.stem.split("_")
    reader = BP4DPlusReader(root)
    assert reader.labels(subject, task) == {}
    refused = [m for m in reader.issues.messages if path.name in m and "expected frame" in m]
    assert len(refused) == 1 and "in the first column, strictly increasing" in refused[0]
