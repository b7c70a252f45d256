"""The reader interface: a dataset lists its sequences and yields frames with labels.

A reader is the only place that knows its dataset's layout. Frames come as BGR arrays (or
None with an error when a file cannot be read: the row is reported, never silently lost).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clef_core.common.errors import ClefError
from clef_core.common.paths import symlink_loop


@dataclass(frozen=True)
class SequenceRef:
    """One unit of work: a task of a subject, a video, or a chunk of images."""

    key: str  # unique and file-name safe, e.g. "F001_T1"
    subject: str
    task: str | None
    source: str  # path (or zip path) it reads from, for messages
    continuous: bool = True  # frames of one video: faces can be tracked between them


@dataclass
class FrameItem:
    frame: int  # frame number as the labels name it
    image: np.ndarray | None  # BGR; None when unreadable
    au: list[int] | None = None  # per AU in the reader's order: 1, 0, -1 unknown
    expression: int = -1  # class index in the reader's order, -1 none
    box: tuple[float, float, float, float] | None = None  # dataset-given face box (x, y, w, h)
    aligned: bool = False  # already an aligned face crop (RAF-DB aligned, FERPlus)
    error: str | None = None  # why the image is missing


@dataclass
class ReadIssues:
    """Problems found while listing or reading: counted in the manifest, never fatal."""

    messages: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.messages.append(message)


class Reader(ABC):
    name: str
    au_ids: tuple[int, ...] = ()
    classes: tuple[str, ...] = ()

    def __init__(self, root: Path) -> None:
        if symlink_loop(root):  # exists() says False for it too: not "does not exist"
            raise ClefError(f"{self.name}: dataset root: symlink loop at {root}")
        if not root.exists():
            raise ClefError(f"{self.name}: dataset root {root} does not exist")
        self.root = root
        self.issues = ReadIssues()

    @abstractmethod
    def sequences(self) -> list[SequenceRef]:
        """Every sequence of the dataset, sorted (so runs are reproducible)."""

    @abstractmethod
    def frames(self, seq: SequenceRef, reduce: int = 1) -> Iterator[FrameItem]:
        """The frames of one sequence, streamed; image files decoded at 1/`reduce` scale
        when `reducible(seq)` (the others ignore it)."""

    def reducible(self, seq: SequenceRef) -> bool:
        """Whether `frames(seq, reduce)` can decode its frames smaller: a sequence of image
        files of one face at one distance from the camera."""
        return False

    def part(self, subject: str) -> int:
        """The subject's fold part (0-based), -1 when the dataset has none."""
        return -1


def layout_error(name: str, root: Path, expected: str) -> ClefError:
    return ClefError(f"{root} is not a {name} layout: expected {expected}")
