"""BP4D and BP4D+ layouts: frame folders (or one zip per subject for BP4D+) and AU_OCC CSVs.

BP4D:  <root>/BP4D-training/<Subject>/<Task>/<frame>.jpg, <root>/AUCoding/AU_OCC/<S>_<T>.csv
BP4D+: <root>/2D+3D/<Subject>/<Task>/<frame>.jpg or <root>/2D+3D/<Subject>.zip, same CSVs.
Only a contiguous middle segment of each task is coded (frames outside it have no row), a
few cells are 9 ("not coded"), and frame numbers start at a subject-specific offset with a
zero-padding width that differs between subjects, as in the real releases.
"""

from __future__ import annotations

import csv
import io
import zipfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from clef_core.common.datasets import REGISTRY
from synthetic.dynamics import AU_INDEX, BP4D_PLUS_PROFILES, BP4D_PROFILES
from synthetic.identity import rng_for
from synthetic.sequence import render_sequence, truth_row
from synthetic.spec import SynthSpec, encode_jpeg, zip_add

BP4D_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
BP4D_PLUS_CSV_AUS = (
    1,
    2,
    4,
    5,
    6,
    7,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    22,
    23,
    24,
    *range(27, 40),
)
BP4D_PLUS_CODED_TASKS = ("T1", "T6", "T7", "T8")
# An AU is coded present from FACS B-level (intensity >= 2, DISFA's protocol too): trace-level
# movements are barely visible at 224 px, in life and here.
OCCURRENCE_THRESHOLD = 2.0
CODED_SHARE = 0.7  # middle share of each task's frames that carries labels
NOT_CODED_RATE = 0.01  # cells written as 9


def occurrence(intensity: float) -> int:
    return int(intensity >= OCCURRENCE_THRESHOLD)


def jobs(spec: SynthSpec, dataset: str) -> list[Any]:
    if dataset == "bp4d":
        subjects, tasks = spec.subjects_of("bp4d"), list(BP4D_PROFILES)
    else:
        # BP4D+ subjects: spread over our 4 parts so every fold has training and test data.
        parts = REGISTRY["bp4d_plus"].parts
        subjects = [parts[k % 4][k // 4] for k in range(max(spec.subjects, 4))]
        tasks = list(BP4D_PLUS_PROFILES)
    return [
        partial(write_task, spec, dataset, s, t, k) for k, s in enumerate(subjects) for t in tasks
    ]


def write_task(spec: SynthSpec, dataset: str, subject: str, task: str, index: int) -> list[dict]:
    plus = dataset == "bp4d_plus"
    profile = (BP4D_PLUS_PROFILES if plus else BP4D_PROFILES)[task]
    rng = rng_for(spec.seed, dataset, subject, task, "layout")
    start = int(rng_for(spec.seed, dataset, subject, "start").integers(1, 1500))
    width = 3 + index % 3  # zero-padding differs between subjects
    n = spec.frames_per_task
    lo = int(n * (1 - CODED_SHARE) / 2)
    hi = lo + max(2, int(n * CODED_SHARE))
    coded = (not plus) or task in BP4D_PLUS_CODED_TASKS
    top = spec.root(dataset) / ("2D+3D" if plus else "BP4D-training")
    as_zip = plus and index % 2 == 1  # BP4D+ ships both layouts; exercise both
    rows, label_rows, images = [], [], []
    for i, frame, au, truth in render_sequence(spec, dataset, subject, task, n, profile):
        number = start + i
        name = f"{subject}/{task}/{str(number).zfill(width)}.jpg"
        images.append((name, encode_jpeg(frame)))
        labeled = coded and lo <= i < hi
        rows.append(truth_row(dataset, subject, task, number, au, truth, labeled=labeled))
        if labeled:
            label_rows.append((number, au))
    if as_zip:
        top.mkdir(parents=True, exist_ok=True)
        tmp = top / f".{subject}_{task}.zip.part"
        with zipfile.ZipFile(tmp, "w") as archive:
            for name, data in images:
                zip_add(archive, name, data)
    else:
        for name, data in images:
            path = top / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    if coded:
        _write_labels(spec, dataset, subject, task, label_rows, rng)
    return rows


def _write_labels(
    spec: SynthSpec,
    dataset: str,
    subject: str,
    task: str,
    label_rows: list[tuple[int, np.ndarray]],
    rng: np.random.Generator,
) -> None:
    plus = dataset == "bp4d_plus"
    columns = BP4D_PLUS_CSV_AUS if plus else tuple(range(1, 40))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["frame" if plus else "0", *(str(c) for c in columns)])
    for number, au in label_rows:
        values = []
        for c in columns:
            if c in AU_INDEX and (plus or c in BP4D_AUS):
                values.append(9 if rng.random() < NOT_CODED_RATE else occurrence(au[AU_INDEX[c]]))
            else:
                values.append(0 if plus else 9)  # BP4D codes only its 12 AUs
        writer.writerow([number, *values])
    path = spec.root(dataset) / "AUCoding" / "AU_OCC" / f"{subject}_{task}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.getvalue())


def finish(spec: SynthSpec, dataset: str, rows: list[dict]) -> None:
    """Merge each zipped BP4D+ subject's per-task archives into `<Subject>.zip`."""
    if dataset != "bp4d_plus":
        return
    top = spec.root(dataset) / "2D+3D"
    parts: dict[str, list[Path]] = {}
    for part in sorted(top.glob(".*.zip.part")):
        parts.setdefault(part.name[1:].split("_")[0], []).append(part)
    for subject, files in parts.items():
        with zipfile.ZipFile(top / f"{subject}.zip", "w") as archive:
            for f in sorted(files):
                with zipfile.ZipFile(f) as src:
                    for info in src.infolist():
                        zip_add(archive, info.filename, src.read(info))
        for f in files:
            f.unlink()
