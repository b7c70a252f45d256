"""The synthetic generator writes each real dataset's layout, with labels equal to what it rendered."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

from clef_core.common.datasets import REGISTRY
from synthetic.dynamics import AU_INDEX
from synthetic.layouts.bp4d import BP4D_AUS, BP4D_PLUS_CODED_TASKS, OCCURRENCE_THRESHOLD
from synthetic.layouts.disfa import DISFA_CODED_AUS
from synthetic.spec import make_spec


def truth(root: Path, dataset: str) -> list[dict]:
    return pq.read_table(root / "truth" / f"{dataset}.parquet").to_pylist()


def test_bp4d_frames_and_labels(synth_root: Path) -> None:
    root = synth_root / "BP4D"
    subjects = sorted(p.name for p in (root / "BP4D-training").iterdir())
    assert len(subjects) == 6
    assert all(
        any(s in part for s in subjects) for part in REGISTRY["bp4d"].parts
    )  # every fold has subjects
    widths = {len(next((root / "BP4D-training" / s / "T1").glob("*.jpg")).stem) for s in subjects}
    assert len(widths) > 1, "zero-padding width should vary between subjects"
    rows = {(r["subject"], r["task"], r["frame"]): r for r in truth(synth_root, "bp4d")}
    n_labeled = n_frames = not_coded = 0
    for csv_path in sorted((root / "AUCoding" / "AU_OCC").glob("*.csv")):
        subject, task = csv_path.stem.split("_")
        with csv_path.open() as f:
            table = list(csv.DictReader(f))
        frames = sorted(
            int(p.stem) for p in (root / "BP4D-training" / subject / task).glob("*.jpg")
        )
        coded = [int(r["0"]) for r in table]
        n_frames += len(frames)
        n_labeled += len(coded)
        assert coded == list(range(coded[0], coded[0] + len(coded))), "one contiguous segment"
        assert frames[0] < coded[0] and coded[-1] < frames[-1], "only the middle is coded"
        for r in table:
            intensity = rows[(subject, task, int(r["0"]))]["au_intensity"]
            for au in BP4D_AUS:
                value = int(r[str(au)])
                not_coded += value == 9
                if value != 9:
                    assert value == int(intensity[AU_INDEX[au]] >= OCCURRENCE_THRESHOLD)
            assert r["5"] == "9"  # AUs BP4D does not code
    assert 0.5 < n_labeled / n_frames < 0.9 and not_coded > 0


def test_bp4d_plus_folder_and_zip_layouts(synth_root: Path) -> None:
    top = synth_root / "BP4D+" / "2D+3D"
    zips, folders = sorted(top.glob("*.zip")), sorted(p for p in top.iterdir() if p.is_dir())
    assert zips and folders
    with zipfile.ZipFile(zips[0]) as archive:
        names = archive.namelist()
    assert {n.split("/")[1] for n in names} == {f"T{k}" for k in range(1, 11)}
    assert all(n.startswith(zips[0].stem + "/") and n.endswith(".jpg") for n in names)
    labeled = {
        p.stem.split("_")[1] for p in (synth_root / "BP4D+" / "AUCoding" / "AU_OCC").glob("*.csv")
    }
    assert labeled == set(BP4D_PLUS_CODED_TASKS)
    header = next(
        csv.reader((synth_root / "BP4D+/AUCoding/AU_OCC").glob("*.csv").__next__().open())
    )
    assert len(header) == 35 and header[0] == "frame"


def test_disfa_videos_and_intensities(synth_root: Path) -> None:
    root = synth_root / "DISFA"
    videos = sorted((root / "Videos_LeftCamera").glob("LeftVideoSN*_comp.avi"))
    assert len(videos) == 6
    subject = videos[0].name[len("LeftVideo") : -len("_comp.avi")]
    assert any(subject in part for part in REGISTRY["disfa"].parts)
    cap = cv2.VideoCapture(str(videos[0]))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    rows = [r for r in truth(synth_root, "disfa") if r["subject"] == subject]
    assert n == len(rows)
    for au in DISFA_CODED_AUS:
        lines = (root / "ActionUnit_Labels" / subject / f"{subject}_au{au}.txt").read_text().split()
        assert len(lines) == n
        values = [int(line.split(",")[1]) for line in lines]
        assert [int(line.split(",")[0]) for line in lines] == list(range(1, n + 1))
        assert values == [int(r["au_intensity"][AU_INDEX[au]]) for r in rows]


def test_fer_layouts(synth_root: Path) -> None:
    raf = (synth_root / "RAF-DB/basic/EmoLabel/list_patition_label.txt").read_text().split("\n")
    first_name, first_label = raf[0].split()
    assert first_name.startswith(("train_", "test_")) and 1 <= int(first_label) <= 7
    aligned = cv2.imread(
        str(synth_root / "RAF-DB/basic/Image/aligned" / first_name.replace(".jpg", "_aligned.jpg"))
    )
    assert aligned.shape == (100, 100, 3)
    with (synth_root / "AffectNet/Manually_Annotated_file_lists/training.csv").open() as f:
        table = list(csv.DictReader(f))
    assert {"subDirectory_filePath", "face_x", "facial_landmarks", "expression"} <= set(table[0])
    assert len(table[0]["facial_landmarks"].split(";")) == 136
    assert (
        synth_root / "AffectNet/Manually_Annotated_Images" / table[0]["subDirectory_filePath"]
    ).exists()
    with (synth_root / "FERPlus/fer2013.csv").open() as f:
        old = list(csv.DictReader(f))
    with (synth_root / "FERPlus/fer2013new.csv").open() as f:
        new = list(csv.DictReader(f))
    assert len(old) == len(new) == 140
    assert len(old[0]["pixels"].split()) == 48 * 48
    assert {r["Usage"] for r in new} == {"Training", "PublicTest", "PrivateTest"}
    labels = [r for r in truth(synth_root, "rafdb")]
    noisy = sum(r["label"] != r["expression"] for r in labels)
    assert 0 < noisy < 0.2 * len(labels)  # the configured label noise, no more


def test_videos_and_no_face_frames(synth_root: Path) -> None:
    clips = sorted((synth_root / "videos").glob("*.mp4"))
    assert len(clips) == 2
    cap = cv2.VideoCapture(str(clips[0]))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (240, 320, 3)
    rows = truth(synth_root, "bp4d") + truth(synth_root, "bp4d_plus") + truth(synth_root, "disfa")
    share = np.mean([not r["visible"] for r in rows])
    assert 0.002 < share < 0.08


def test_more_subjects_than_the_real_layout_is_one_clear_error() -> None:
    """DISFA has 27 subjects: picking 48 says so (it looped forever); `--subjects 48` renders
    all 27."""
    import pytest

    from clef_core.common.errors import ClefError
    from preprocessing.folds import pick_subjects

    assert len(pick_subjects("disfa", 27)) == len(set(pick_subjects("disfa", 27))) == 27
    with pytest.raises(ClefError, match=r"disfa has 27 subjects.*asked for 48"):
        pick_subjects("disfa", 48)
    # The generator's option is a cap: as many as the real dataset has.
    spec = make_spec(Path("unused"), "test", subjects=48)
    assert len(spec.subjects_of("disfa")) == 27 and len(spec.subjects_of("bp4d")) == 41
