"""FER datasets: RAF-DB basic, AffectNet-7/8 and FERPlus. Images come in chunks (sequences
of up to CHUNK images); `part` is the split: 0 train, 1 test (RAF-DB test, AffectNet
validation, FERPlus PrivateTest), 2 FERPlus PublicTest (validation)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np

from clef_core.common.datasets import REGISTRY
from faces.decode import DecodeError, read_image
from preprocessing.readers.base import FrameItem, Reader, SequenceRef, layout_error

CHUNK = 1000
SPLITS = {"train": 0, "test": 1, "val": 2}


class _ImageListReader(Reader):
    """Shared by the FER readers: an index of (name, label, split, box) rows, read in chunks."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.rows = self._index()

    def _index(self) -> list[tuple[str, int, str, tuple[float, float, float, float] | None]]:
        raise NotImplementedError

    def sequences(self) -> list[SequenceRef]:
        out = []
        for split in SPLITS:
            names = [r for r in self.rows if r[2] == split]
            for k in range(0, len(names), CHUNK):
                out.append(SequenceRef(f"{split}_{k // CHUNK:04d}", split, None, str(self.root)))
        return out

    def part(self, subject: str) -> int:
        return SPLITS.get(subject, -1)

    def _chunk(self, seq: SequenceRef) -> list:
        rows = [r for r in self.rows if r[2] == seq.subject]
        k = int(seq.key.rsplit("_", 1)[1])
        return rows[k * CHUNK : (k + 1) * CHUNK]


class RAFDBReader(_ImageListReader):
    name = "rafdb"
    classes = REGISTRY[name].classes  # labels 1-7

    def _index(self) -> list:
        path = self.root / "basic" / "EmoLabel" / "list_patition_label.txt"
        if not path.is_file():
            raise layout_error(
                self.name,
                self.root,
                "<root>/basic/EmoLabel/list_patition_label.txt and <root>/basic/Image/aligned/",
            )
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= 7:
                if line.strip():
                    self.issues.add(f"{path}:{n}: expected '<name>.jpg <1-7>', found {line!r}")
                continue
            split = "train" if parts[0].startswith("train_") else "test"
            rows.append((parts[0], int(parts[1]) - 1, split, None))
        return rows

    def frames(self, seq: SequenceRef, reduce: int = 1) -> Iterator[FrameItem]:
        folder = self.root / "basic" / "Image" / "aligned"
        for index, (name, label, _, _) in enumerate(self._chunk(seq)):
            path = folder / name.replace(".jpg", "_aligned.jpg")
            try:
                yield FrameItem(index, read_image(path), expression=label, aligned=True)
            except DecodeError as err:
                yield FrameItem(index, None, expression=label, error=str(err))


class AffectNet7Reader(_ImageListReader):
    name = "affectnet7"
    classes: tuple[str, ...] = REGISTRY[name].classes

    def _index(self) -> list:
        lists = self.root / "Manually_Annotated_file_lists"
        rows = []
        for file, split in (("training.csv", "train"), ("validation.csv", "test")):
            path = lists / file
            if not path.is_file():
                raise layout_error(
                    self.name,
                    self.root,
                    "<root>/Manually_Annotated_file_lists/training.csv and validation.csv",
                )
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    try:
                        label = int(row["expression"])
                        box = tuple(
                            float(row[k]) for k in ("face_x", "face_y", "face_width", "face_height")
                        )
                    except (KeyError, ValueError, TypeError):
                        self.issues.add(
                            f"{path}: row {row.get('subDirectory_filePath')!r} lacks expression or face box"
                        )
                        continue
                    if label < len(
                        self.classes
                    ):  # drops None, Uncertain, Non-Face (and contempt for -7)
                        rows.append((row["subDirectory_filePath"], label, split, box))
        return rows

    def frames(self, seq: SequenceRef, reduce: int = 1) -> Iterator[FrameItem]:
        folder = self.root / "Manually_Annotated_Images"
        for index, (name, label, _, box) in enumerate(self._chunk(seq)):
            try:
                yield FrameItem(index, read_image(folder / name), expression=label, box=box)
            except DecodeError as err:
                yield FrameItem(index, None, expression=label, error=str(err))


class AffectNet8Reader(AffectNet7Reader):
    name = "affectnet8"
    classes = REGISTRY[name].classes  # AffectNet-7's and contempt


def _gray48(values: list[str]) -> np.ndarray | None:
    """A 48 x 48 uint8 image from FER2013's pixel values, None when they are not that."""
    try:
        pixels = np.array(values, str).astype(np.int64)
    except ValueError:
        return None
    if pixels.size != 48 * 48 or pixels.min() < 0 or pixels.max() > 255:
        return None
    return pixels.astype(np.uint8).reshape(48, 48)


class FERPlusReader(_ImageListReader):
    """Majority protocol: vote counts <= 1 are zeroed; the top class is the label when it holds
    more than half of the remaining votes, else the image is dropped; unknown/NF dropped."""

    name = "ferplus"
    classes = REGISTRY[name].classes
    usage: ClassVar[dict[str, str]] = {
        "Training": "train",
        "PrivateTest": "test",
        "PublicTest": "val",
    }

    def _index(self) -> list:
        old, new = self.root / "fer2013.csv", self.root / "fer2013new.csv"
        if not (old.is_file() and new.is_file()):
            raise layout_error(self.name, self.root, "<root>/fer2013.csv and <root>/fer2013new.csv")
        with old.open(newline="") as f:
            reader = csv.DictReader(f)
            if "pixels" not in (reader.fieldnames or ()):
                raise layout_error(self.name, self.root, "a 'pixels' column in <root>/fer2013.csv")
            self.pixels = [r["pixels"] or "" for r in reader]
        rows = []
        with new.open(newline="") as f:
            for i, row in enumerate(csv.DictReader(f)):
                try:
                    votes = np.array(
                        [float(row.get(c) or 0) for c in (*self.classes, "unknown", "NF")]
                    )
                except ValueError:  # a bad label row: an issue, the others go on
                    self.issues.add(f"{new}: row {i + 2} has a vote that is not a number")
                    continue
                votes[votes <= 1] = 0
                top = int(votes.argmax())
                if votes.sum() == 0 or top >= len(self.classes) or votes[top] <= votes.sum() / 2:
                    continue
                split = self.usage.get(row.get("Usage", ""), "train")
                rows.append((str(i), top, split, None))
        return rows

    def frames(self, seq: SequenceRef, reduce: int = 1) -> Iterator[FrameItem]:
        for index, (row, label, _, _) in enumerate(self._chunk(seq)):
            # fer2013new.csv labels the rows of fer2013.csv by position: a shorter one is bad input
            values = self.pixels[int(row)].split() if int(row) < len(self.pixels) else []
            gray = _gray48(values)
            if gray is None:
                error = f"fer2013.csv row {row}: expected 2304 pixel values 0-255, found {len(values)} values"
                yield FrameItem(index, None, expression=label, error=error)
                continue
            yield FrameItem(
                int(row), np.repeat(gray[..., None], 3, 2), expression=label, aligned=True
            )
