"""Action-unit dynamics: activity profiles, onset-apex-offset episodes, expression prototypes.

Each activity (task) has an AU profile matching its target emotion, rendered as episodes
whose rates depend on the activity, plus off-profile AUs at a lower rate. So one activity
holds several expressions and activities overlap, as in the real data, but the activity
still carries information about the expressions (what stage-1 pre-training relies on).
"""

from __future__ import annotations

import numpy as np

# Every AU the renderer draws, in this fixed order (the truth files use it too).
RENDERED_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 24, 25, 26)
AU_INDEX = {au: i for i, au in enumerate(RENDERED_AUS)}

# Activity -> (AUs of its emotion profile, episode rate per 100 frames).
BP4D_PROFILES: dict[str, tuple[tuple[int, ...], float]] = {
    "T1": ((6, 12, 25, 10), 3.0),  # joke: happiness / amusement
    "T2": ((1, 4, 15, 17), 2.0),  # documentary: sadness
    "T3": ((1, 2, 5, 25, 26), 3.5),  # sudden sound: surprise / startle
    "T4": ((12, 14, 24, 17, 6), 2.5),  # silly song: embarrassment
    "T5": ((1, 2, 4, 5, 20, 25), 2.5),  # physical threat: fear / nervousness
    "T6": ((4, 6, 7, 10, 25, 9), 3.0),  # ice water: pain
    "T7": ((4, 5, 7, 23, 24), 2.5),  # insult: anger
    "T8": ((9, 10, 4, 15, 17), 3.0),  # odour: disgust
}
BP4D_PLUS_PROFILES: dict[str, tuple[tuple[int, ...], float]] = {
    "T1": BP4D_PROFILES["T1"],
    "T2": ((1, 2, 5, 26, 12), 2.5),  # 3D avatar: surprise
    "T3": ((1, 4, 15, 17), 2.0),  # 911 call: sadness
    "T4": BP4D_PROFILES["T3"],  # sudden sound: startle
    "T5": ((4, 14, 2, 24), 2.0),  # true/false questions: skepticism
    "T6": BP4D_PROFILES["T4"],  # silly song: embarrassment
    "T7": BP4D_PROFILES["T5"],  # dart game: fear
    "T8": BP4D_PROFILES["T6"],  # ice water: pain
    "T9": BP4D_PROFILES["T7"],  # insult: anger
    "T10": BP4D_PROFILES["T8"],  # odour: disgust
}
OFF_PROFILE_RATE = 0.35  # episodes per 100 frames for each AU outside the profile

# Prototypical AU combinations (intensity 0-5) of the basic emotions, for the FER datasets.
EXPRESSION_PROTOTYPES: dict[str, dict[int, float]] = {
    "neutral": {},
    "happiness": {6: 3.5, 12: 4.0, 25: 2.0},
    "sadness": {1: 3.5, 4: 3.0, 15: 4.0, 17: 2.0},
    "surprise": {1: 4.0, 2: 4.0, 5: 4.0, 26: 4.0, 25: 3.0},
    "fear": {1: 3.5, 2: 3.0, 4: 3.0, 5: 4.0, 20: 4.0, 26: 2.5, 25: 2.5},
    "anger": {4: 4.5, 5: 3.0, 7: 3.5, 23: 4.0, 24: 2.0},
    "disgust": {9: 4.5, 15: 3.0, 10: 3.0, 4: 2.0},
    "contempt": {12: 3.0, 14: 3.5},  # unilateral in life; drawn on the right side only
}


def au_vector(intensities: dict[int, float]) -> np.ndarray:
    """A {au: intensity} dict as a float32 vector in RENDERED_AUS order."""
    vec = np.zeros(len(RENDERED_AUS), np.float32)
    for au, value in intensities.items():
        vec[AU_INDEX[au]] = value
    return vec


def _episode(length: int, apex: float, rng: np.random.Generator) -> np.ndarray:
    """One onset-apex-offset curve of `length` frames peaking at `apex` (smooth ramps)."""
    onset = max(1, int(length * rng.uniform(0.2, 0.35)))
    offset = max(1, int(length * rng.uniform(0.25, 0.4)))
    hold = max(0, length - onset - offset)
    up = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, onset, endpoint=False))
    down = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, offset))
    return apex * np.concatenate([up, np.ones(hold), down]).astype(np.float32)


def activity_track(
    n_frames: int,
    profile: tuple[tuple[int, ...], float],
    rng: np.random.Generator,
    expressiveness: float = 1.0,
) -> np.ndarray:
    """AU intensities [n_frames, len(RENDERED_AUS)] for one task of one subject.

    Profile AUs come in episodes (at the profile's rate, co-occurring: one episode raises
    most of the profile's AUs together, as an expression does); every other AU has rare
    episodes of its own. `expressiveness` scales a subject's apex intensities.
    """
    aus, rate = profile
    track = np.zeros((n_frames, len(RENDERED_AUS)), np.float32)

    def place(cols: list[int], count: int, apex_lo: float) -> None:
        for _ in range(count):
            length = int(rng.integers(12, 48))
            start = int(rng.integers(-length // 2, max(1, n_frames - length // 2)))
            for col in cols:
                apex = min(5.0, rng.uniform(apex_lo, 5.0) * expressiveness)
                curve = _episode(length, apex, rng)
                lo, hi = max(0, start), min(n_frames, start + length)
                if hi > lo:
                    seg = track[lo:hi, col]
                    np.maximum(seg, curve[lo - start : hi - start], out=seg)

    n_profile = rng.poisson(rate * n_frames / 100.0) + 1
    for _ in range(n_profile):
        # An expression episode recruits a random majority of the profile's AUs.
        k = max(1, int(round(len(aus) * rng.uniform(0.5, 1.0))))
        chosen = rng.choice(len(aus), size=k, replace=False)
        place([AU_INDEX[aus[i]] for i in chosen], 1, 1.5)
    for au in RENDERED_AUS:
        if au not in aus:
            place([AU_INDEX[au]], int(rng.poisson(OFF_PROFILE_RATE * n_frames / 100.0)), 1.0)
    return np.round(track, 2)
