"""What to generate: the options of `clef synth`, its presets, and shared helpers."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from clef_core.common.datasets import REGISTRY, synth_layouts
from clef_core.common.errors import ClefError
from preprocessing.folds import pick_subjects

# The layouts `clef synth` renders, each in the folder its registry records name (the roots a
# user passes to preprocess; `clef_core.common.datasets`). AffectNet-7 and -8 share one.
SYNTH_DATASETS = tuple(synth_layouts())
ROOT_NAMES = {name: str(d.synth_folder) for name, d in synth_layouts().items()}
# Reader name -> the folder under the output directory that is that reader's root.
READER_ROOTS = {d.name: str(d.synth_folder) for d in REGISTRY.values() if d.synth_folder}


@dataclass(frozen=True)
class SynthSpec:
    out: Path
    datasets: tuple[str, ...] = SYNTH_DATASETS
    subjects: int = 6  # per AU dataset, at most its real count (`subjects_of`)
    frames_per_task: int = 24  # frames of each BP4D/BP4D+ task; DISFA videos get 4x
    image_size: tuple[int, int] = (320, 240)  # width, height of frames
    fer_images: int = 140  # images per FER dataset
    videos: int = 2  # plain user-style videos
    seed: int = 0
    label_noise: float = 0.05  # FER label noise rate
    no_face_share: float = 0.03
    workers: int = 2

    def root(self, dataset: str) -> Path:
        return self.out / ROOT_NAMES[dataset]

    def subjects_of(self, dataset: str) -> list[str]:
        """The real subject ids to render: `subjects` of them, or every one the real dataset
        has when it has fewer (DISFA: 27, BP4D: 41), spread over its fold parts."""
        available = sum(len(members) for members in REGISTRY[dataset].parts)
        return pick_subjects(dataset, min(self.subjects, available))


PRESETS: dict[str, dict[str, Any]] = {
    # Seconds of work: the test suite.
    "test": {
        "subjects": 6,
        "frames_per_task": 20,
        "image_size": (320, 240),
        "fer_images": 140,
        "videos": 2,
    },
    # A few minutes of pipeline work on 2 cores: the demo. Every subject of BP4D (41) and
    # DISFA (27) with short tasks: a small model trained from scratch generalises to new
    # people only from many identities (docs/measurements.md, "Training from scratch").
    "demo": {
        "subjects": 41,
        "frames_per_task": 24,
        "image_size": (640, 480),
        "fer_images": 700,
        "videos": 2,
    },
}


def make_spec(out: Path, preset: str = "test", **overrides: Any) -> SynthSpec:
    """A spec from a preset with explicit options winning; bad values get one clear error."""
    if preset not in PRESETS:
        raise ClefError(f"unknown synth preset {preset!r}; known: {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    spec = replace(SynthSpec(out=out), **values)
    unknown = [d for d in spec.datasets if d not in SYNTH_DATASETS]
    if unknown:
        raise ClefError(
            f"unknown dataset {unknown[0]!r} for synth; expected any of {', '.join(SYNTH_DATASETS)}"
        )
    if spec.subjects < 3:
        raise ClefError(f"--subjects must be at least 3 (one per fold part), got {spec.subjects}")
    if spec.frames_per_task < 4:
        raise ClefError(f"--frames-per-task must be at least 4, got {spec.frames_per_task}")
    w, h = spec.image_size
    if w < 96 or h < 96:
        raise ClefError(f"--image-size must be at least 96x96, got {w}x{h}")
    if spec.fer_images < 16:
        raise ClefError(f"--fer-images must be at least 16, got {spec.fer_images}")
    return spec


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ClefError(f"--image-size expects WIDTHxHEIGHT like 640x480, got {text!r}") from None
    return w, h


def write_jpeg(path: Path, image: np.ndarray, quality: int = 92) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    path.write_bytes(buf.tobytes())


def encode_jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def zip_add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    """Add a file with a fixed timestamp, so the same input gives a byte-identical zip."""
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    archive.writestr(info, data)
