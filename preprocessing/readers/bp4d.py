"""BP4D and BP4D+: frame folders (or BP4D+ zip per subject) and AU_OCC occurrence CSVs.

The first column is the frame number (by position: its header varies, and may be blank or a
number, as BP4D+'s "1,1,2,4,..."); AU columns are mapped by header name ('k' is AU k); frame
numbers come from file stems as integers (zero-padding differs between subjects). The frame
column must be strictly increasing and name the image files: otherwise the file's labels are
refused (or its rows naming no file left out) with one message saying what was expected and
what was found. Any value other than 0/1 (9 = not coded) is unknown (-1). Frames without a
label row are unlabeled.
"""

from __future__ import annotations

import csv
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from clef_core.common.datasets import REGISTRY
from faces.decode import (
    MAX_MEMBER_BYTES,
    DecodeError,
    decode_image_bytes,
    limit,
    read_image,
)
from preprocessing.folds import part_of
from preprocessing.readers.base import FrameItem, Reader, SequenceRef, layout_error

SUBJECT = re.compile(r"^[FM]\d{3}$")
TASK = re.compile(r"^T\d+$")


class BP4DReader(Reader):
    name = "bp4d"
    au_ids = REGISTRY[name].au_ids
    expected = "<root>/[<release folder>/]<Subject>/<Task>/<frame>.jpg and <root>/AUCoding/AU_OCC/<Subject>_<Task>.csv"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.frame_root = self._find_frame_root()
        labels = [
            p for p in (root / "AUCoding" / "AU_OCC", *root.glob("*/AUCoding/AU_OCC")) if p.is_dir()
        ]
        self.label_dir = labels[0] if labels else None
        if self.frame_root is None:
            raise layout_error(self.name, root, self.expected)

    def _find_frame_root(self) -> Path | None:
        for candidate in (self.root, *sorted(p for p in self.root.iterdir() if p.is_dir())):
            if any(
                SUBJECT.match(p.stem)
                for p in candidate.iterdir()
                if p.is_dir() or p.suffix == ".zip"
            ):
                return candidate
        return None

    def _subjects(self) -> dict[str, Path]:
        assert self.frame_root is not None
        found: dict[str, Path] = {}
        for p in sorted(self.frame_root.iterdir()):
            if SUBJECT.match(p.stem) and (p.is_dir() or p.suffix == ".zip"):
                found.setdefault(p.stem, p)
        return found

    def sequences(self) -> list[SequenceRef]:
        out = []
        for subject, path in self._subjects().items():
            if path.suffix == ".zip":
                try:
                    with zipfile.ZipFile(path) as archive:
                        tasks = {
                            n.split("/")[-2]
                            for n in archive.namelist()
                            if n.endswith(".jpg") and "/" in n
                        }
                except zipfile.BadZipFile:
                    self.issues.add(f"{path}: not a readable zip file; subject skipped")
                    continue
            else:
                tasks = {p.name for p in path.iterdir() if p.is_dir()}
            for task in sorted((t for t in tasks if TASK.match(t)), key=lambda t: int(t[1:])):
                out.append(SequenceRef(f"{subject}_{task}", subject, task, str(path)))
        self._report_unframed({s.key for s in out})
        return out

    def _report_unframed(self, listed: set[str]) -> None:
        """One message per label file whose task has no frames here (a folder not copied, a
        zip not unpacked): without it the task is left out without a word."""
        if self.label_dir is None:
            return
        subjects, frame_root = self._subjects(), self.frame_root
        assert frame_root is not None
        for path in sorted(self.label_dir.glob("*.csv")):
            subject, _, task = path.stem.partition("_")
            if not (SUBJECT.match(subject) and TASK.match(task)) or path.stem in listed:
                continue
            source = subjects.get(subject)
            where = (
                f"no {subject}/{task}/*.jpg in {source}"
                if source is not None and source.suffix == ".zip"
                else f"no frame folder {(source or frame_root / subject) / task}"
            )
            self.issues.add(f"{path}: labels for {subject} {task} but {where}; task skipped")

    def part(self, subject: str) -> int:
        return part_of(self.name, subject)

    def labels(self, subject: str, task: str) -> dict[int, list[int]]:
        """frame number -> AU values in `au_ids` order (1, 0, -1)."""
        if self.label_dir is None:
            return {}
        path = self.label_dir / f"{subject}_{task}.csv"
        if not path.is_file():
            return {}
        with path.open(newline="") as f:
            table = [row for row in csv.reader(f) if row]
        if len(table) < 2:
            return {}
        # The frame number is the first column, read by position: its header differs between
        # releases ("0", "frame", blank, or a number such as BP4D+'s "1,1,2,4,...", which a
        # by-name reading would take for AU 1's column). AU columns are found by name.
        header = [name.strip() for name in table[0]]
        column = {name: i for i, name in reversed(list(enumerate(header))) if i > 0}
        missing = [au for au in self.au_ids if str(au) not in column]
        if missing:
            self.issues.add(
                f"{path}: no column for AU {', '.join(map(str, missing))}; those AUs are unknown"
            )
        cells = [column.get(str(au)) for au in self.au_ids]
        out: dict[int, list[int]] = {}
        last = None
        for row in table[1:]:
            try:
                frame = int(float(row[0]))
            except ValueError:
                self.issues.add(f"{path}: frame number {row[0]!r} is not an integer; row skipped")
                continue
            if last is not None and frame <= last:
                self.issues.add(
                    f"{path}: expected frame numbers in the first column, strictly increasing; "
                    f"found {frame} after {last} (header {','.join(header[:4])},...): "
                    "its labels are not used"
                )
                return {}
            last = frame
            out[frame] = [
                _occurrence(row[i] if i is not None and i < len(row) else None) for i in cells
            ]
        return out

    def _frame_files(self, seq: SequenceRef) -> list[tuple[int, str]]:
        """(frame number, file name) of the sequence's images, sorted; names only, no data."""
        path = Path(seq.source)
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                names = [
                    n
                    for n in archive.namelist()
                    if n.split("/")[-2:-1] == [seq.task] and n.endswith(".jpg")
                ]
        else:
            names = [str(p) for p in (path / str(seq.task)).glob("*.jpg")]
        return self._numbered(names, seq)

    def _images(
        self, seq: SequenceRef, files: list[tuple[int, str]]
    ) -> Iterator[tuple[int, str, bytes | Path | DecodeError]]:
        """Each frame's bytes (zip) or path (folder); a zip member that would inflate past
        $CLEF_MAX_MEMBER_BYTES, or does not inflate, comes as its DecodeError, unread."""
        path = Path(seq.source)
        if path.suffix == ".zip":
            most = limit("MAX_MEMBER_BYTES", MAX_MEMBER_BYTES)
            with zipfile.ZipFile(path) as archive:
                for number, name in files:
                    yield number, name, _member(archive, path, name, most)
        else:
            for number, name in files:
                yield number, name, Path(name)

    def _checked_labels(
        self, seq: SequenceRef, files: list[tuple[int, str]]
    ) -> dict[int, list[int]]:
        """The sequence's labels, if their frame numbers name its image files: none matching
        means the first column is not the frame number the file stems carry (labels refused,
        one message); some not matching are reported and those rows left out."""
        labels = self.labels(seq.subject, str(seq.task))
        if not labels or not files:
            return labels
        numbers = {n for n, _ in files}
        orphans = sorted(set(labels) - numbers)
        if not orphans:
            return labels
        path = f"{self.label_dir}/{seq.subject}_{seq.task}.csv"
        expected = (
            f"expected the first column's frame numbers to name the image files "
            f"({len(files)} files, {files[0][0]}..{files[-1][0]})"
        )
        found = f"{min(labels)}..{max(labels)}"
        if len(orphans) == len(labels):
            self.issues.add(
                f"{path}: {expected}; found {len(labels)} label rows numbered {found}, none "
                "of them an image file's number: its labels are not used"
            )
            return {}
        self.issues.add(
            f"{path}: {expected}; found {len(orphans)} of {len(labels)} label rows ({found}) "
            f"that name frames that do not exist (first: {orphans[0]}): those rows are not used"
        )
        return labels

    def _numbered(self, names: list[str], seq: SequenceRef) -> list[tuple[int, str]]:
        out = []
        for name in names:
            stem = Path(name).stem
            if stem.isdigit():
                out.append((int(stem), name))
            else:
                self.issues.add(f"{seq.key}: frame file {name} has no integer number; skipped")
        return sorted(out)

    def reducible(self, seq: SequenceRef) -> bool:
        return True

    def frames(self, seq: SequenceRef, reduce: int = 1) -> Iterator[FrameItem]:
        files = self._frame_files(seq)
        if not files:  # a folder (or zip folder) with no frame in it: no shard, said why
            self.issues.add(f"{seq.source}: no {seq.task}/*.jpg frames in it; task skipped")
        labels = self._checked_labels(seq, files)
        unknown = [-1] * len(self.au_ids)
        for number, name, data in self._images(seq, files):
            try:
                if isinstance(data, DecodeError):
                    raise data
                image = (
                    decode_image_bytes(data, name, reduce)
                    if isinstance(data, bytes)
                    else read_image(data, reduce)
                )
                yield FrameItem(number, image, au=labels.get(number, unknown))
            except DecodeError as err:
                yield FrameItem(number, None, au=labels.get(number, unknown), error=str(err))


class BP4DPlusReader(BP4DReader):
    name = "bp4d_plus"
    au_ids = REGISTRY[name].au_ids
    expected = "<root>/2D+3D/<Subject>/<Task>/<frame>.jpg or <root>/2D+3D/<Subject>.zip, and <root>/AUCoding/AU_OCC/<Subject>_<Task>.csv"


def _member(archive: zipfile.ZipFile, path: Path, name: str, most: int) -> bytes | DecodeError:
    """A zip member's bytes, or why not: one that would inflate past `most` bytes is never
    read. Its size is the central directory's word, and zipfile never inflates past that
    word (the CRC then fails), so a member that lies about it is caught too."""
    size = archive.getinfo(name).file_size
    if size > most:
        return DecodeError(
            f"{path}:{name}: zip member of {size} bytes inflated, over the limit of {most} "
            "($CLEF_MAX_MEMBER_BYTES); not read"
        )
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        return DecodeError(f"{path}:{name}: {err}")


def _occurrence(value: str | None) -> int:
    """'1' -> 1, '0' -> 0, anything else (9 = not coded, blank, missing) -> -1 unknown."""
    if value is None:
        return -1
    value = value.strip()
    return 1 if value in ("1", "1.0") else 0 if value in ("0", "0.0") else -1
