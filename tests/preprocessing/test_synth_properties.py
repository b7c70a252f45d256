"""Generator properties: determinism, detectable faces, learnable AUs, identity as a nuisance."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from clef_core.common.errors import ClefError
from faces.align import align_by_eyes
from preprocessing.folds import part_of
from synthetic.dynamics import AU_INDEX
from synthetic.generate import generate
from synthetic.layouts.bp4d import BP4D_AUS, OCCURRENCE_THRESHOLD
from synthetic.spec import make_spec


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_arguments_give_byte_identical_files(tmp_path: Path) -> None:
    kwargs = dict(subjects=3, frames_per_task=6, fer_images=16, videos=1, image_size=(160, 120))
    generate(make_spec(tmp_path / "a", "test", workers=1, **kwargs), show_progress=False)
    generate(make_spec(tmp_path / "b", "test", workers=2, **kwargs), show_progress=False)
    a, b = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert len(a) > 100 and a == b
    generate(make_spec(tmp_path / "c", "test", workers=2, seed=1, **kwargs), show_progress=False)
    assert digest(tmp_path / "c") != a


def test_bad_arguments_are_one_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ClefError, match="unknown dataset 'bp5d'"):
        make_spec(tmp_path, "test", datasets=("bp5d",))
    with pytest.raises(ClefError, match="--subjects must be at least 3"):
        make_spec(tmp_path, "test", subjects=0)
    with pytest.raises(ClefError, match="unknown synth preset"):
        make_spec(tmp_path, "huge")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ClefError, match="cannot write to output directory"):
        generate(make_spec(blocker / "out", "test"), show_progress=False)


def test_the_face_front_end_finds_the_synthetic_faces(synth_root: Path) -> None:
    """The project's detector (MTCNN) on every visible synthetic BP4D face, searched whole;
    none where the renderer hid the face."""
    from faces.detect import FaceDetector

    detector = FaceDetector()
    rows = pq.read_table(synth_root / "truth/bp4d.parquet").to_pylist()
    files = {
        (p.parts[-3], p.parts[-2], int(p.stem)): p
        for p in (synth_root / "BP4D/BP4D-training").glob("*/*/*.jpg")
    }
    found = {True: 0, False: 0}
    for r in rows[::2]:
        image = cv2.imread(str(files[(r["subject"], r["task"], r["frame"])]))
        found[r["visible"]] += detector.detect(image) is not None
    visible = sum(r["visible"] for r in rows[::2])
    assert found[True] / visible >= 0.98 and found[False] == 0


@pytest.fixture(scope="module")
def hog_features(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, ...]:
    """HOG of eye-aligned 64 px crops (truth eyes), person-normalised, for 9 BP4D subjects."""
    out = tmp_path_factory.mktemp("learn")
    generate(
        make_spec(out, "test", datasets=("bp4d",), subjects=9, frames_per_task=32),
        show_progress=False,
    )
    files = {
        (p.parts[-3], p.parts[-2], int(p.stem)): p
        for p in (out / "BP4D/BP4D-training").glob("*/*/*.jpg")
    }
    hog = cv2.HOGDescriptor((64, 64), (16, 16), (8, 8), (8, 8), 9)
    feats, labels, parts, subjects = [], [], [], []
    for r in pq.read_table(out / "truth/bp4d.parquet").to_pylist():
        if not r["visible"]:
            continue
        image = cv2.imread(str(files[(r["subject"], r["task"], r["frame"])]))
        crop = align_by_eyes(image, np.array(r["eyes"]).reshape(2, 2), 64)
        feats.append(hog.compute(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)).ravel())
        labels.append([r["au_intensity"][AU_INDEX[a]] >= OCCURRENCE_THRESHOLD for a in BP4D_AUS])
        parts.append(part_of("bp4d", r["subject"]))
        subjects.append(r["subject"])
    return np.array(feats), np.array(labels), np.array(parts), np.array(subjects)


def test_aus_are_learnable_across_subjects(hog_features: tuple[np.ndarray, ...]) -> None:
    feats, labels, parts, subjects = hog_features
    feats = feats.copy()
    for s in set(subjects):  # person-specific normalisation (as OpenFace does)
        feats[subjects == s] -= feats[subjects == s].mean(0)
    train, test = parts != 2, parts == 2
    f1, constant = [], []
    for k in range(labels.shape[1]):
        if labels[train, k].sum() < 5 or labels[test, k].sum() == 0:
            continue
        clf = LogisticRegression(C=0.05, max_iter=1000, class_weight="balanced")
        clf.fit(feats[train], labels[train, k])
        f1.append(f1_score(labels[test, k], clf.predict(feats[test])))
        p = labels[test, k].mean()
        constant.append(2 * p / (1 + p))  # F1 of always predicting "present"
    assert len(f1) >= 8
    assert np.mean(f1) > np.mean(constant) + 0.1, (np.mean(f1), np.mean(constant))


def test_identity_is_a_nuisance(hog_features: tuple[np.ndarray, ...]) -> None:
    feats, _, _, subjects = hog_features
    order = np.random.default_rng(0).permutation(len(feats))
    a, b = order[: len(order) // 2], order[len(order) // 2 :]
    clf = LogisticRegression(max_iter=1000).fit(feats[a], subjects[a])
    accuracy = (clf.predict(feats[b]) == subjects[b]).mean()
    assert accuracy > 3 / len(set(subjects))


def test_bp4d_plus_people_are_not_bp4d_people_of_the_same_id() -> None:
    """Both datasets name subjects F001...; they recruited different people, so a stage 1 on
    BP4D+ must not see BP4D's (held-out) faces. BP4D's own faces stay as measured."""
    from synthetic.identity import make_identity
    from synthetic.sequence import identity_of

    for subject in ("F001", "M001"):
        assert identity_of("bp4d", subject, 0) == make_identity(subject, 0)  # unchanged
        plus = identity_of("bp4d_plus", subject, 0)
        assert plus != identity_of("bp4d", subject, 0)
        assert plus == identity_of("bp4d_plus", subject, 0)  # still determined
    assert identity_of("disfa", "SN001", 0) == make_identity("SN001", 0)
