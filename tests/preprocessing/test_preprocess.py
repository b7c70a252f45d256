"""Preprocessing on the synthetic layouts: shard labels equal the generator's truth, faces are
found, bad input is reported without losing anything else."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from clef_core.common.errors import ClefError
from clef_core.common.manifest import Manifest, read_manifest
from preprocessing.pipeline import PreprocessOptions, plan
from preprocessing.readers.bp4d import BP4DReader
from preprocessing.readers.disfa import PROTOCOL_AUS
from preprocessing.readers.fer import AffectNet8Reader, FERPlusReader, RAFDBReader
from preprocessing.shards import SCHEMA
from synthetic.dynamics import AU_INDEX
from synthetic.generate import generate
from synthetic.layouts.bp4d import OCCURRENCE_THRESHOLD
from synthetic.spec import READER_ROOTS, make_spec
from tests.conftest import run_inline

ROOTS = {d: folder for d, folder in READER_ROOTS.items() if d != "affectnet7"}


@pytest.fixture(scope="module")
def shards(shard_dir: Path) -> dict[str, tuple[list[dict], Manifest]]:
    out = {}
    for dataset in ROOTS:
        manifest = read_manifest(shard_dir, dataset)
        rows = [
            r for s in manifest.shards for r in pq.read_table(shard_dir / dataset / s).to_pylist()
        ]
        out[dataset] = (rows, manifest)
    return out


def truth(root: Path, dataset: str) -> list[dict]:
    return pq.read_table(root / "truth" / f"{dataset}.parquet").to_pylist()


@pytest.mark.parametrize("dataset", ["bp4d", "bp4d_plus"])
def test_bp4d_labels_equal_truth_and_faces_found(shards, synth_root: Path, dataset: str) -> None:  # type: ignore[no-untyped-def]
    rows, manifest = shards[dataset]
    assert manifest.au_ids == list(BP4DReader.au_ids) and manifest.unreadable == 0
    by_key = {(t["subject"], t["task"], t["frame"]): t for t in truth(synth_root, dataset)}
    assert len(rows) == len(by_key)  # every frame kept, faceless ones too
    found = visible = agree = labeled = 0
    for r in rows:
        t = by_key[(r["subject"], r["task"], r["frame"])]
        assert r["part"] >= 0 and len(r["au"]) == 12
        if t["labeled"]:
            labeled += 1
            expected = [
                int(t["au_intensity"][AU_INDEX[a]] >= OCCURRENCE_THRESHOLD)
                for a in BP4DReader.au_ids
            ]
            # 9 ("not coded") cells become -1; every other cell equals what was rendered.
            assert all(v == e for v, e in zip(r["au"], expected, strict=True) if v != -1)
            agree += sum(v == -1 for v in r["au"])
        else:
            assert r["au"] == [-1] * 12
        if t["visible"]:
            visible += 1
            found += r["face_found"]
    assert labeled > 0 and agree < 0.05 * labeled * 12
    assert found / visible >= 0.95
    assert manifest.no_face == sum(not r["face_found"] for r in rows)


def test_large_frames_are_decoded_smaller_with_the_same_faces(tmp_path: Path) -> None:
    """BP4D-size portrait frames (1040 x 1392): a face needs a ~700 px source for a 224 crop,
    so its frames are decoded at half size; the crops match those from full-size frames."""
    spec = make_spec(
        tmp_path, "test", datasets=("bp4d",), subjects=3, frames_per_task=4, image_size=(1040, 1392)
    )
    generate(spec, show_progress=False)
    root = spec.root("bp4d")
    reader = BP4DReader(root)
    first = next(reader.frames(reader.sequences()[0], reduce=2))
    assert first.image is not None and first.image.shape == (696, 520, 3)
    full_rows, full = run_inline("bp4d", root, tmp_path / "full", 224, reduce_decode=False)
    rows, reduced = run_inline("bp4d", root, tmp_path / "reduced", 224)
    sequences = len(reduced.shards)
    assert full.decode_reduction == {1: sequences}
    assert reduced.decode_reduction.get(2, 0) >= 0.9 * sequences  # a face was found
    assert abs(reduced.no_face - full.no_face) <= 0.03 * reduced.rows
    _, rerun = run_inline("bp4d", root, tmp_path / "reduced", 224)  # every shard skipped
    assert rerun.decode_reduction == reduced.decode_reduction

    def key(r: dict) -> tuple:
        return r["subject"], r["task"], r["frame"]

    differences = []
    for a, b in zip(sorted(full_rows, key=key), sorted(rows, key=key), strict=True):
        assert key(a) == key(b) and a["au"] == b["au"]
        if a["face_found"] and b["face_found"]:
            crops = [cv2.imdecode(np.frombuffer(r["image"], np.uint8), 1) for r in (a, b)]
            assert crops[1].shape == (224, 224, 3)
            differences.append(np.abs(crops[0].astype(int) - crops[1]).mean())
    # Boxes found on a half-size frame differ by a pixel or two: ~5 grey levels on average.
    assert np.median(differences) < 10


def test_disfa_protocol_labels(shards, synth_root: Path) -> None:  # type: ignore[no-untyped-def]
    rows, manifest = shards["disfa"]
    assert manifest.au_ids == list(PROTOCOL_AUS)
    by_key = {(t["subject"], t["frame"]): t for t in truth(synth_root, "disfa")}
    assert len(rows) == len(by_key)
    for r in rows:
        t = by_key[(r["subject"], r["frame"])]
        assert r["au"] == [int(t["au_intensity"][AU_INDEX[a]] >= 2) for a in PROTOCOL_AUS]
    assert (
        np.mean([r["face_found"] for r in rows if by_key[(r["subject"], r["frame"])]["visible"]])
        >= 0.95
    )


@pytest.mark.parametrize(
    ("dataset", "reader"),
    [("rafdb", RAFDBReader), ("affectnet8", AffectNet8Reader), ("ferplus", FERPlusReader)],
)
def test_fer_labels_equal_written_labels(shards, synth_root: Path, dataset: str, reader) -> None:  # type: ignore[no-untyped-def]
    rows, manifest = shards[dataset]
    assert manifest.classes == list(reader.classes)
    written = {
        t["frame"]: t["label"]
        for t in truth(synth_root, "affectnet" if "affectnet" in dataset else dataset)
    }
    labels = [manifest.classes[r["expression"]] for r in rows]
    assert all(r["face_found"] for r in rows) and {r["part"] for r in rows} >= {0, 1}
    if dataset == "ferplus":  # rows are named by their index in the CSV
        assert all(written[r["frame"]] == lab for r, lab in zip(rows, labels, strict=True))
    else:
        assert sorted(labels) == sorted(written.values())


def test_video_rows_equal_frames(shards, synth_root: Path) -> None:  # type: ignore[no-untyped-def]
    rows, manifest = shards["video"]
    assert len(rows) == len(truth(synth_root, "videos")) and manifest.au_ids == []
    image = cv2.imdecode(np.frombuffer(rows[0]["image"], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (112, 112, 3)


def test_shard_schema(shards, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows, manifest = shards["bp4d"]
    assert set(rows[0]) == set(SCHEMA.names)
    assert manifest.rows == len(rows) and sum(manifest.rows_per_part.values()) == len(rows)
    with pytest.raises(ClefError, match="run `clef preprocess --dataset disfa` first"):
        read_manifest(tmp_path, "disfa")


def test_landmarks_are_stored_in_source_frame_pixels(shards, synth_root: Path) -> None:  # type: ignore[no-untyped-def]
    """x0..x4 then y0..y4: the eyes (points 0 and 1) where the renderer drew them; no
    landmarks where no face was found or the dataset gives the face."""
    rows, _ = shards["bp4d"]
    by_key = {(t["subject"], t["task"], t["frame"]): t for t in truth(synth_root, "bp4d")}
    errors = []
    for r in rows:
        if not r["face_found"]:
            assert r["landmarks"] is None and r["face_score"] == 0
            continue
        assert len(r["landmarks"]) == 10 and 0.5 < r["face_score"] <= 1
        xs, ys = np.array(r["landmarks"][:5]), np.array(r["landmarks"][5:])
        eyes = np.array(by_key[(r["subject"], r["task"], r["frame"])]["eyes"]).reshape(2, 2)
        iod = np.linalg.norm(eyes[1] - eyes[0])
        errors.append(np.linalg.norm(np.stack([xs[:2], ys[:2]], 1) - eyes, axis=1).mean() / iod)
    assert np.median(errors) < 0.06
    fer_rows, _ = shards["ferplus"]  # aligned by the dataset: nothing searched
    assert all(r["landmarks"] is None for r in fer_rows)


def test_a_cut_or_outdated_shard_is_built_again(synth_root: Path, tmp_path: Path) -> None:
    """A shard is a cache of its source: one cut short, or of an older schema (no landmarks
    column), is not skipped but rebuilt, to the same rows as a fresh run. Training checks the
    shards first (`cache.verify_shards`): the cut one is named, with the command that
    rebuilds it, before any work."""
    import pyarrow.parquet as pq

    from clef_core.training.cache import verify_shards

    root = synth_root / "DISFA"
    rows, manifest = run_inline("disfa", root, tmp_path)
    verify_shards(tmp_path, "disfa")
    first, second = (tmp_path / "disfa" / name for name in manifest.shard_names[:2])
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])
    with pytest.raises(ClefError, match=rf"1 unreadable: {first.name} .*clef preprocess --dat"):
        verify_shards(tmp_path, "disfa")
    pq.write_table(pq.read_table(second).drop_columns(["landmarks"]), second)
    again, _ = run_inline("disfa", root, tmp_path)
    assert again == rows
    verify_shards(tmp_path, "disfa")


def test_missing_or_wrong_root_is_one_clear_error(tmp_path: Path, synth_root: Path) -> None:
    with pytest.raises(ClefError, match="does not exist"):
        plan(PreprocessOptions("bp4d", tmp_path / "nope", tmp_path))
    with pytest.raises(ClefError, match=r"is not a bp4d layout: expected <root>/.*AU_OCC"):
        plan(PreprocessOptions("bp4d", synth_root / "DISFA", tmp_path))
    with pytest.raises(ClefError, match="is not a disfa layout"):
        plan(PreprocessOptions("disfa", synth_root / "BP4D", tmp_path))
    with pytest.raises(ClefError, match="unknown dataset 'bp5d'"):
        plan(PreprocessOptions("bp5d", synth_root, tmp_path))


def test_bad_files_are_counted_and_nothing_else_is_lost(synth_root: Path, tmp_path: Path) -> None:
    bp4d = tmp_path / "BP4D"
    shutil.copytree(synth_root / "BP4D", bp4d)
    frames = sorted((bp4d / "BP4D-training").glob("*/T1/*.jpg"))
    frames[3].write_bytes(b"not a jpeg")  # an unreadable image
    csv_path = next((bp4d / "AUCoding/AU_OCC").glob("*_T2.csv"))
    lines = csv_path.read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index("12")  # a label file missing a column ...
    cut = [",".join(v for i, v in enumerate(line.split(",")) if i != drop) for line in lines]
    cut.append(
        "99999" + cut[-1][cut[-1].index(",") :]
    )  # ... and a row for a frame that does not exist
    csv_path.write_text("\n".join(cut) + "\n")
    rows, manifest = run_inline("bp4d", bp4d, tmp_path / "shards")
    assert manifest.unreadable == 1 and "unreadable image" in manifest.unreadable_examples[0]
    assert any("no column for AU 12" in m for m in manifest.issues)
    assert any("do not exist" in m for m in manifest.issues)
    assert len(rows) == len(truth(synth_root, "bp4d")) - 1

    disfa = tmp_path / "DISFA"
    shutil.copytree(synth_root / "DISFA", disfa)
    video = sorted((disfa / "Videos_LeftCamera").glob("*.avi"))[0]
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # a truncated video
    rows, manifest = run_inline("disfa", disfa, tmp_path / "shards")
    subject = video.name[len("LeftVideo") : -len("_comp.avi")]
    kept = [r for r in rows if r["subject"] == subject]
    assert 0 < len(kept) < 80  # frames read before the damage are kept
    assert manifest.unreadable == 1 and subject in manifest.unreadable_examples[0]
    assert len({r["subject"] for r in rows}) == 6  # the other videos are untouched


def test_a_bug_inside_a_sequence_stops_the_run_instead_of_being_counted(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import preprocessing.pipeline as pipeline

    def broken(*args: object) -> None:
        raise TypeError("a programming error")

    monkeypatch.setattr(pipeline, "align_item", broken)
    with pytest.raises(TypeError, match="a programming error"):
        run_inline("video", synth_root / "videos", tmp_path)


def test_bad_label_and_pixel_rows_are_counted_never_taken_for_bugs(
    synth_root: Path, tmp_path: Path
) -> None:
    """FERPlus's two CSVs: a vote that is not a number (a label-parsing error), a row whose
    pixels are not 48 x 48 values 0-255, and a fer2013.csv cut shorter than the labels that
    index it are bad inputs: listed and counted while every other image is written."""
    from preprocessing.readers.fer import FERPlusReader

    root = tmp_path / "FERPlus"
    shutil.copytree(synth_root / "FERPlus", root)
    kept = [int(r[0]) for r in FERPlusReader(root).rows]  # fer2013.csv rows with a label
    bad_vote, bad_pixels, cut = kept[0], kept[1], kept[-3]
    labels = (root / "fer2013new.csv").read_text().splitlines()
    cells = labels[1 + bad_vote].split(",")
    cells[-3] = "many"  # the contempt vote
    labels[1 + bad_vote] = ",".join(cells)
    (root / "fer2013new.csv").write_text("\n".join(labels) + "\n")
    images = (root / "fer2013.csv").read_text().splitlines()
    emotion, _, usage = images[1 + bad_pixels].split(",")
    images[1 + bad_pixels] = f"{emotion},12 34 x,{usage}"
    (root / "fer2013.csv").write_text("\n".join(images[: 1 + cut]) + "\n")  # rows >= cut gone

    rows, manifest = run_inline("ferplus", root, tmp_path / "shards")
    assert [m for m in manifest.issues if "not a number" in m] == [
        f"{root / 'fer2013new.csv'}: row {bad_vote + 2} has a vote that is not a number"
    ]
    missing = 1 + sum(k >= cut for k in kept)  # the bad pixel row and the rows cut away
    assert manifest.unreadable == missing and not manifest.failed_sequences
    assert any(f"row {bad_pixels}: expected 2304" in m for m in manifest.unreadable_examples)
    assert len(rows) == manifest.rows == len(kept) - 1 - missing


def test_the_caches_key_follows_what_the_shards_hold(synth_root: Path, tmp_path: Path) -> None:
    """`Manifest.content_digest` keys the decoded arrays, trained units and probes: a rerun
    (shards skipped, manifest rewritten) and a forced one with the same options keep it, so
    a second `make demo` reuses everything; other JPEG quality gives other images: a new key."""
    root = synth_root / "DISFA"
    _, first = run_inline("disfa", root, tmp_path)
    _, again = run_inline("disfa", root, tmp_path)
    _, forced = run_inline("disfa", root, tmp_path, force=True)
    assert first.content_digest() == again.content_digest() == forced.content_digest()
    _, other = run_inline("disfa", root, tmp_path, force=True, jpeg_quality=60)
    assert other.input_hash == first.input_hash and other.rows == first.rows
    assert other.content_digest() != first.content_digest()
