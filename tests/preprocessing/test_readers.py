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


def _renumbered(synth_root: Path, tmp_path: Path, shift: int) -> tuple[BP4DPlusReader, Path]:
    """A copy of the synthetic BP4D+ whose first label file has the ambiguous numeric header
    ("1,1,2,4,...") and its frame numbers moved by `shift`."""
    root, path = _with_header(synth_root, tmp_path, "1")
    lines = path.read_text().splitlines()
    moved = [f"{int(line.split(',', 1)[0]) + shift},{line.split(',', 1)[1]}" for line in lines[1:]]
    path.write_text("\n".join([lines[0], *moved]) + "\n")
    return BP4DPlusReader(root), path


def test_label_frames_must_name_the_image_files(synth_root: Path, tmp_path: Path) -> None:
    """Frame numbers that name no image file (strictly increasing, so plausible) are refused
    with one message saying what was expected and what was found; a file of which only some
    rows name images keeps those rows and says how many do not."""
    reader, path = _renumbered(synth_root, tmp_path / "none", 100_000)
    subject, task = path.stem.split("_")
    seq = next(s for s in reader.sequences() if (s.subject, s.task) == (subject, task))
    labels = reader.labels(subject, task)
    items = list(reader.frames(seq))
    assert items and all(max(item.au or [-1]) < 0 for item in items)  # no label used
    refused = [m for m in reader.issues.messages if path.name in m]
    first, last = items[0].frame, items[-1].frame
    assert len(refused) == 1, refused
    assert "expected the first column's frame numbers to name the image files" in refused[0]
    assert f"({len(items)} files, {first}..{last})" in refused[0]
    assert f"found {len(labels)} label rows numbered {min(labels)}..{max(labels)}" in refused[0]
    assert "its labels are not used" in refused[0]

    # Moved so that the second half of the rows lies past the last image file.
    original = BP4DPlusReader(synth_root / "BP4D+").labels(subject, task)
    frames = sorted(original)
    shift = last - frames[len(frames) // 2] + 1
    reader, path = _renumbered(synth_root, tmp_path / "half", shift)
    items = list(reader.frames(seq))
    partial = [m for m in reader.issues.messages if path.name in m]
    assert len(partial) == 1, partial
    gone = len(frames) - len(frames) // 2
    assert f"found {gone} of {len(frames)} label rows" in partial[0]
    assert "name frames that do not exist" in partial[0]
    for item in items:  # the rows that name a file label it, with that row's own values
        assert item.au == original.get(item.frame - shift, [-1] * 12)
    assert sum(item.frame - shift in original for item in items) == len(frames) // 2


def test_a_labelled_task_without_frames_is_reported(synth_root: Path, tmp_path: Path) -> None:
    """A BP4D copy where F001 has T1's frames, an empty T2 folder and no T3 folder, with the
    label files of all three: T1 is written; T2 and T3 each get one message saying which
    labels found no frames where (issue #31: they were left out without a word)."""
    from tests.conftest import run_inline

    source = synth_root / "BP4D"
    root = tmp_path / "BP4D"
    labels = root / "AUCoding" / "AU_OCC"
    labels.mkdir(parents=True)
    for task in ("T1", "T2", "T3"):
        shutil.copy(source / "AUCoding" / "AU_OCC" / f"F001_{task}.csv", labels)
    frames = root / "BP4D-training" / "F001"
    shutil.copytree(source / "BP4D-training" / "F001" / "T1", frames / "T1")
    (frames / "T2").mkdir()

    rows, manifest = run_inline("bp4d", root, tmp_path / "shards")
    assert {r["task"] for r in rows} == {"T1"} and manifest.rows == len(rows) > 0
    assert sorted(manifest.issues) == [  # the summary prints them as warnings
        f"{labels / 'F001_T3.csv'}: labels for F001 T3 but no frame folder {frames / 'T3'}; "
        "task skipped",
        f"{frames}: no T2/*.jpg frames in it; task skipped",
    ]


def test_a_labelled_task_missing_from_a_zip_is_reported(synth_root: Path, tmp_path: Path) -> None:
    """BP4D+ as zips: a label file whose task (T6) has no member in its subject's zip."""
    import zipfile

    from preprocessing.pipeline import PreprocessOptions, plan

    root = tmp_path / "BP4D+"
    shutil.copytree(synth_root / "BP4D+", root)
    archive = sorted(root.rglob("*.zip"))[0]
    subject = archive.stem
    with zipfile.ZipFile(archive) as z:
        members = {n: z.read(n) for n in z.namelist() if "/T6/" not in n}
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    sequences, issues = plan(PreprocessOptions("bp4d_plus", root, tmp_path / "shards"))
    assert f"{subject}_T6" not in {s.key for s in sequences}
    label = root / "AUCoding" / "AU_OCC" / f"{subject}_T6.csv"
    assert issues == [
        f"{label}: labels for {subject} T6 but no {subject}/T6/*.jpg in {archive}; task skipped"
    ]
