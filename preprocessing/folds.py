"""Subject-exclusive fold parts of each AU dataset (fold k tests on part k, trains on the rest)."""

from __future__ import annotations

import numpy as np

from clef_core.common.errors import ClefError

# BP4D parts used by JAA-Net and ME-GraphAU.
BP4D_PARTS: tuple[tuple[str, ...], ...] = (
    tuple(
        [
            "F001",
            "M007",
            "F018",
            "F008",
            "F002",
            "M004",
            "F010",
            "F009",
            "M012",
            "M001",
            "F016",
            "M014",
            "F023",
            "M008",
        ]
    ),
    tuple(
        [
            "M011",
            "F003",
            "M010",
            "M002",
            "F005",
            "F022",
            "M018",
            "M017",
            "F013",
            "M016",
            "F020",
            "F011",
            "M013",
            "M005",
        ]
    ),
    tuple(
        [
            "F007",
            "F015",
            "F006",
            "F019",
            "M006",
            "M009",
            "F012",
            "M003",
            "F004",
            "F021",
            "F017",
            "M015",
            "F014",
        ]
    ),
)

# DISFA parts used by JAA-Net and ME-GraphAU.
DISFA_PARTS: tuple[tuple[str, ...], ...] = (
    tuple(["SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"]),
    tuple(["SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"]),
    tuple(["SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"]),
)

BP4D_PLUS_SUBJECTS: tuple[str, ...] = tuple(
    [f"F{i:03d}" for i in range(1, 83)] + [f"M{i:03d}" for i in range(1, 59)]
)
BP4D_PLUS_SPLIT_SEED = 2023


def _bp4d_plus_parts() -> tuple[tuple[str, ...], ...]:
    """Our fixed 4 x 35 split of the 140 BP4D+ subjects.

    NOT the CLEF authors' split (none is public): a permutation seeded with 2023, each part
    sorted. Results on it are comparable between runs of this project, not to the paper.
    """
    order = np.random.default_rng(BP4D_PLUS_SPLIT_SEED).permutation(len(BP4D_PLUS_SUBJECTS))
    subjects = [BP4D_PLUS_SUBJECTS[i] for i in order]
    return tuple(tuple(sorted(subjects[k * 35 : (k + 1) * 35])) for k in range(4))


BP4D_PLUS_PARTS = _bp4d_plus_parts()

PARTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "bp4d": BP4D_PARTS,
    "bp4d_plus": BP4D_PLUS_PARTS,
    "disfa": DISFA_PARTS,
}


def part_of(dataset: str, subject: str) -> int:
    """The 0-based part of a subject, or -1 when the dataset has no parts or does not list it."""
    for k, members in enumerate(PARTS.get(dataset, ())):
        if subject in members:
            return k
    return -1


def pick_subjects(dataset: str, n: int) -> list[str]:
    """n subjects spread evenly over the dataset's parts (round-robin), for the generator."""
    parts = PARTS[dataset]
    available = sum(len(members) for members in parts)
    if n > available:
        raise ClefError(
            f"{dataset} has {available} subjects in its real layout; asked for {n} "
            f"(give --subjects {available} or fewer)"
        )
    chosen: list[str] = []
    depth = 0
    while len(chosen) < n:
        for members in parts:
            if depth < len(members) and len(chosen) < n:
                chosen.append(members[depth])
        depth += 1
    return chosen
