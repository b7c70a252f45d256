"""DISFA: left-camera videos and per-AU intensity files; 8 AUs, positive at intensity >= 2."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from clef_core.common.datasets import REGISTRY
from faces.decode import Backend, DecodeError, iter_video
from preprocessing.folds import part_of
from preprocessing.readers.base import FrameItem, Reader, SequenceRef, layout_error

VIDEO = re.compile(r"^LeftVideo(SN\d{3})_comp\.avi$", re.IGNORECASE)
PROTOCOL_AUS = REGISTRY["disfa"].au_ids  # the AUs of the common protocol
POSITIVE_FROM = 2  # intensity >= 2 counts as present (the common protocol)


class DISFAReader(Reader):
    name = "disfa"
    au_ids = PROTOCOL_AUS
    backend: Backend = "auto"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        dirs = [p for p in root.iterdir() if p.is_dir() and p.name.lower() == "videos_leftcamera"]
        if not dirs:
            raise layout_error(
                self.name,
                root,
                "<root>/Videos_LeftCamera/LeftVideoSN001_comp.avi and <root>/ActionUnit_Labels/SN001/SN001_au1.txt",
            )
        self.video_dir = dirs[0]
        self.label_dir = root / "ActionUnit_Labels"

    def sequences(self) -> list[SequenceRef]:
        out = []
        for path in sorted(self.video_dir.iterdir()):
            match = VIDEO.match(path.name)
            if match:
                out.append(
                    SequenceRef(match.group(1).upper(), match.group(1).upper(), None, str(path))
                )
        return out

    def part(self, subject: str) -> int:
        return part_of(self.name, subject)

    def labels(self, subject: str) -> dict[int, list[int]]:
        """1-based frame index -> AU values (1 / 0; -1 where a file lacks the frame)."""
        per_au: list[dict[int, int]] = []
        for au in self.au_ids:
            path = self.label_dir / subject / f"{subject}_au{au}.txt"
            values: dict[int, int] = {}
            if not path.is_file():
                self.issues.add(f"{subject}: label file {path.name} missing; AU {au} unknown")
            else:
                for line in path.read_text().split():
                    try:
                        frame, intensity = (int(float(v)) for v in line.split(",")[:2])
                    except ValueError:
                        self.issues.add(f"{path}: line {line!r} is not 'frame,intensity'; skipped")
                        continue
                    values[frame] = int(intensity >= POSITIVE_FROM)
            per_au.append(values)
        frames = set().union(*per_au)
        return {f: [v.get(f, -1) for v in per_au] for f in frames}

    def frames(self, seq: SequenceRef, reduce: int = 1) -> Iterator[FrameItem]:
        labels = self.labels(seq.subject)
        unknown = [-1] * len(self.au_ids)
        count = 0
        try:
            for index, image in iter_video(Path(seq.source), self.backend):
                count = index + 1
                yield FrameItem(index + 1, image, au=labels.get(index + 1, unknown))
        except DecodeError as err:  # the frames before the damage are kept; the file counted
            yield FrameItem(count + 1, None, au=unknown, error=str(err))
        orphans = [f for f in labels if f > count]
        if orphans:
            self.issues.add(
                f"{seq.key}: {len(orphans)} label rows name frames past the video's end ({count} frames)"
            )
