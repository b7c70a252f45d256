"""Any folder of videos and images (users' own data): one sequence per video, one per folder
of images. No labels."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from faces.decode import DecodeError, iter_video, read_image
from preprocessing.readers.base import FrameItem, Reader, SequenceRef

VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def safe_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "item"


class VideoFolderReader(Reader):
    name = "video"

    def sequences(self) -> list[SequenceRef]:
        files = (
            [self.root]
            if self.root.is_file()
            else sorted(p for p in self.root.rglob("*") if p.is_file())
        )
        out = [
            SequenceRef(
                safe_key(
                    str(p.relative_to(self.root.parent if self.root.is_file() else self.root))
                ),
                p.stem,
                None,
                str(p),
            )
            for p in files
            if p.suffix.lower() in VIDEO_EXT
        ]
        folders = sorted({p.parent for p in files if p.suffix.lower() in IMAGE_EXT})
        for folder in folders:
            rel = folder.relative_to(self.root) if self.root.is_dir() else Path(folder.name)
            # A folder of images may be unrelated photos: every image is searched on its own.
            key = safe_key(f"images_{rel}")
            out.append(SequenceRef(key, folder.name, None, str(folder), continuous=False))
        return out

    def frames(self, seq: SequenceRef, reduce: int = 1) -> Iterator[FrameItem]:
        path = Path(seq.source)
        if path.is_dir():
            for index, image in enumerate(
                sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXT)
            ):
                try:
                    yield FrameItem(index, read_image(image))
                except DecodeError as err:
                    yield FrameItem(index, None, error=str(err))
            return
        index = -1
        try:
            for index, frame in iter_video(path):
                yield FrameItem(index, frame)
        except DecodeError as err:  # the frames before the damage are kept; the file counted
            yield FrameItem(index + 1, None, error=str(err))
