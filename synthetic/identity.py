"""Persistent synthetic identities: everything about a subject's look that never changes."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

SKIN_TONES_BGR = np.array(  # light to dark, BGR
    [
        [189, 208, 240],
        [160, 190, 230],
        [130, 170, 215],
        [100, 140, 190],
        [70, 105, 150],
        [50, 75, 110],
    ],
    np.float32,
)
HAIR_BGR = np.array(
    [[20, 20, 25], [30, 45, 70], [40, 80, 130], [90, 140, 190], [150, 150, 150]], np.float32
)


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """A generator determined by the global seed and names (dataset, subject, task...)."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


@dataclass(frozen=True)
class Identity:
    name: str
    face_w: float  # head half-width scale
    face_h: float  # head half-height scale
    skin: tuple[float, float, float]  # BGR
    eye_size: float
    eye_spacing: float
    brow_thickness: float
    brow_height: float  # resting brow distance above the eyes
    nose_length: float
    mouth_width: float
    lip_thickness: float
    hair: tuple[float, float, float]  # BGR
    hair_style: int  # 0 short, 1 long, 2 receding, 3 fringe
    glasses: bool
    beard: bool
    iris: tuple[float, float, float]
    expressiveness: float  # scales the subject's AU apexes


def make_identity(name: str, seed: int, cohort: str = "") -> Identity:
    """The identity of subject `name` (F*/M* names set the prior on beard and hair).

    `cohort` keeps people of different recruitments apart when their ids coincide: BP4D and
    BP4D+ both name subjects F001..., and they are different people. "" (BP4D, DISFA) keeps
    the faces every measurement so far was made on.
    """
    rng = rng_for(seed, "identity", name) if not cohort else rng_for(seed, "identity", cohort, name)
    male = name.upper().startswith("M")
    tone = rng.uniform(0, len(SKIN_TONES_BGR) - 1)
    lo = int(tone)
    skin = SKIN_TONES_BGR[lo] + (tone - lo) * (SKIN_TONES_BGR[min(lo + 1, 5)] - SKIN_TONES_BGR[lo])
    hair = HAIR_BGR[rng.integers(len(HAIR_BGR))] * rng.uniform(0.8, 1.1)
    return Identity(
        name=name,
        face_w=float(rng.uniform(0.86, 1.08) * (1.04 if male else 1.0)),
        face_h=float(rng.uniform(0.9, 1.08)),
        skin=tuple(float(v) for v in skin),  # type: ignore[arg-type]
        eye_size=float(rng.uniform(0.85, 1.2)),
        eye_spacing=float(rng.uniform(0.9, 1.1)),
        brow_thickness=float(rng.uniform(3.0, 7.0) * (1.2 if male else 1.0)),
        brow_height=float(rng.uniform(0.85, 1.2)),
        nose_length=float(rng.uniform(0.85, 1.2)),
        mouth_width=float(rng.uniform(0.85, 1.2)),
        lip_thickness=float(rng.uniform(0.7, 1.3)),
        hair=tuple(float(v) for v in np.clip(hair, 0, 255)),  # type: ignore[arg-type]
        hair_style=int(rng.integers(0, 4)) if male else int(rng.choice([0, 1, 1, 3])),
        glasses=bool(rng.random() < 0.2),
        beard=bool(male and rng.random() < 0.35),
        iris=tuple(float(v) for v in rng.uniform(20, 110, 3)),  # type: ignore[arg-type]
        expressiveness=float(rng.uniform(0.75, 1.15)),
    )
