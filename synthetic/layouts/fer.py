"""FER layouts (RAF-DB basic, AffectNet, FERPlus) from prototypical AU combinations.

Each image is one synthetic person showing one basic emotion at a random intensity, with a
configurable share of wrong labels (real FER labels are noisy too). Classes are imbalanced
roughly as in the real sets, so class weights matter.
"""

from __future__ import annotations

import csv
import io
from functools import partial
from typing import Any

import cv2
import numpy as np

from faces.align import align_by_eyes
from preprocessing.readers.fer import FERPlusReader
from synthetic.dynamics import EXPRESSION_PROTOTYPES, RENDERED_AUS, au_vector
from synthetic.identity import make_identity, rng_for
from synthetic.scene import SequenceRenderer
from synthetic.sequence import truth_row
from synthetic.spec import SynthSpec, write_jpeg

CLASS_SHARE = {
    "neutral": 0.2,
    "happiness": 0.25,
    "sadness": 0.11,
    "surprise": 0.1,
    "fear": 0.07,
    "disgust": 0.06,
    "anger": 0.12,
    "contempt": 0.09,
}
RAFDB_IDS = {
    "surprise": 1,
    "fear": 2,
    "disgust": 3,
    "happiness": 4,
    "sadness": 5,
    "anger": 6,
    "neutral": 7,
}
AFFECTNET_IDS = {
    "neutral": 0,
    "happiness": 1,
    "sadness": 2,
    "surprise": 3,
    "fear": 4,
    "disgust": 5,
    "anger": 6,
    "contempt": 7,
}
FERPLUS_VOTES = (*FERPlusReader.classes, "unknown", "NF")  # fer2013new.csv vote columns
FER2013_IDS = {
    "anger": 0,
    "disgust": 1,
    "fear": 2,
    "happiness": 3,
    "sadness": 4,
    "surprise": 5,
    "neutral": 6,
}
LIGHTS = ((-0.8, -0.3), (-0.2, -0.5), (0.3, -0.2), (0.9, 0.1))  # few, so textures are reused
CHUNK = 40
PEOPLE = 48  # distinct identities in each FER set
SIZE = {"rafdb": (320, 280), "affectnet": (360, 300), "ferplus": (200, 200)}


def classes_of(dataset: str) -> list[str]:
    return list(RAFDB_IDS) if dataset == "rafdb" else list(AFFECTNET_IDS)


def jobs(spec: SynthSpec, dataset: str) -> list[Any]:
    return [
        partial(write_chunk, spec, dataset, start, min(CHUNK, spec.fer_images - start))
        for start in range(0, spec.fer_images, CHUNK)
    ]


def _render(
    spec: SynthSpec, dataset: str, index: int
) -> tuple[np.ndarray, Any, str, str, np.ndarray]:
    """One image: (BGR, truth, true class, written label class, AU intensities)."""
    rng = rng_for(spec.seed, dataset, "image", str(index))
    names = classes_of(dataset)
    share = np.array([CLASS_SHARE[c] for c in names])
    cls = names[int(rng.choice(len(names), p=share / share.sum()))]
    person = f"{'F' if index % 2 else 'M'}{int(rng.integers(PEOPLE)):03d}"
    idt = make_identity(f"{dataset}-{person}", spec.seed)
    au = au_vector(EXPRESSION_PROTOTYPES[cls]) * float(rng.uniform(0.6, 1.15))
    au += (rng.random(len(RENDERED_AUS)) < 0.08) * rng.uniform(0, 1.5, len(RENDERED_AUS))
    au = np.clip(au, 0, 5).astype(np.float32)
    label = cls
    if rng.random() < spec.label_noise:
        label = names[int(rng.choice([i for i, c in enumerate(names) if c != cls]))]
    light = LIGHTS[int(rng.integers(len(LIGHTS)))]
    renderer = SequenceRenderer(idt, rng, 1, SIZE[dataset], no_face_share=0.0, light=light)
    frame, truth = renderer.render(0, au)
    return frame, truth, cls, label, au


def write_chunk(spec: SynthSpec, dataset: str, start: int, count: int) -> list[dict]:
    root = spec.root(dataset)
    rows = []
    for index in range(start, start + count):
        frame, truth, cls, label, au = _render(spec, dataset, index)
        split = "train" if (index * 7919) % 10 < 8 else "test"
        eyes = np.array(truth.eyes, np.float32).reshape(2, 2)
        extra: dict[str, Any] = {"expression": cls, "label": label, "split": split}
        if dataset == "rafdb":
            stem = f"{split}_{index + 1:05d}"
            write_jpeg(root / "basic/Image/original" / f"{stem}.jpg", frame)
            write_jpeg(
                root / "basic/Image/aligned" / f"{stem}_aligned.jpg",
                align_by_eyes(frame, eyes, 100),
            )
            extra["file"] = f"{stem}.jpg"
        elif dataset == "affectnet":
            rel = f"{index // 100 + 1}/{index:06d}.jpg"
            write_jpeg(root / "Manually_Annotated_Images" / rel, frame)
            extra["file"] = rel
        else:
            gray = cv2.cvtColor(align_by_eyes(frame, eyes, 48), cv2.COLOR_BGR2GRAY)
            extra["file"] = f"fer{index:07d}.png"
            extra["_pixels"] = " ".join(str(int(v)) for v in gray.ravel())
        rows.append(truth_row(dataset, extra["file"], None, index, au, truth, **extra))
    return rows


def finish(spec: SynthSpec, dataset: str, rows: list[dict]) -> None:
    rows = sorted(rows, key=lambda r: r["frame"])
    root = spec.root(dataset)
    if dataset == "rafdb":
        text = "".join(f"{r['file']} {RAFDB_IDS[r['label']]}\n" for r in rows)
        path = root / "basic/EmoLabel/list_patition_label.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    elif dataset == "affectnet":
        _affectnet_lists(spec, rows)
    else:
        _ferplus_csvs(spec, rows)


def _affectnet_lists(spec: SynthSpec, rows: list[dict]) -> None:
    head = [
        "subDirectory_filePath",
        "face_x",
        "face_y",
        "face_width",
        "face_height",
        "facial_landmarks",
        "expression",
        "valence",
        "arousal",
    ]
    for split, name in (("train", "training.csv"), ("test", "validation.csv")):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(head)
        for r in rows:
            if r["split"] != split:
                continue
            x, y, w, h = (round(v) for v in r["box"])
            t = np.linspace(0, 2 * np.pi, 68, endpoint=False)  # contour points (synthetic)
            marks = ";".join(
                f"{x + w / 2 + w / 2 * np.cos(a):.2f};{y + h / 2 + h / 2 * np.sin(a):.2f}"
                for a in t
            )
            writer.writerow([r["file"], x, y, w, h, marks, AFFECTNET_IDS[r["label"]], 0.0, 0.0])
        path = spec.root("affectnet") / "Manually_Annotated_file_lists" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(out.getvalue())


def _ferplus_csvs(spec: SynthSpec, rows: list[dict]) -> None:
    """fer2013.csv (pixels, old labels) + fer2013new.csv (10 voters per image, same order)."""
    old, new = io.StringIO(), io.StringIO()
    w_old, w_new = csv.writer(old, lineterminator="\n"), csv.writer(new, lineterminator="\n")
    w_old.writerow(["emotion", "pixels", "Usage"])
    w_new.writerow(["Usage", "Image name", *FERPLUS_VOTES])
    for r in rows:
        rng = rng_for(spec.seed, "ferplus", "votes", str(r["frame"]))
        usage = (
            "Training"
            if r["split"] == "train"
            else ("PrivateTest" if r["frame"] % 2 else "PublicTest")
        )
        votes = dict.fromkeys(FERPLUS_VOTES, 0)
        majority = int(rng.integers(4, 11)) if rng.random() > 0.06 else 3  # some ambiguous
        votes[r["label"]] += majority
        for _ in range(10 - majority):  # the other voters scatter
            votes[FERPLUS_VOTES[int(rng.integers(0, 9))]] += 1
        w_old.writerow([FER2013_IDS.get(r["label"], 6), r["_pixels"], usage])
        w_new.writerow([usage, r["file"], *votes.values()])
    root = spec.root("ferplus")
    root.mkdir(parents=True, exist_ok=True)
    (root / "fer2013.csv").write_text(old.getvalue())
    (root / "fer2013new.csv").write_text(new.getvalue())
