"""Subject-exclusive fold parts of each AU dataset (fold k tests on part k, trains on the rest).

The parts are each dataset's registry record's (`clef_core.common.datasets`): BP4D's and
DISFA's those of JAA-Net and ME-GraphAU, BP4D+'s our fixed split.
"""

from __future__ import annotations

from clef_core.common.datasets import REGISTRY
from clef_core.common.errors import ClefError


def part_of(dataset: str, subject: str) -> int:
    """The 0-based part of a subject, or -1 when the dataset has no parts or does not list it."""
    parts = REGISTRY[dataset].parts if dataset in REGISTRY else ()
    for k, members in enumerate(parts):
        if subject in members:
            return k
    return -1


def pick_subjects(dataset: str, n: int) -> list[str]:
    """n subjects spread evenly over the dataset's parts (round-robin), for the generator."""
    parts = REGISTRY[dataset].parts
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
