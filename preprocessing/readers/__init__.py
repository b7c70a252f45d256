"""One reader per dataset; `get_reader(name, root)` is the only lookup."""

from __future__ import annotations

from pathlib import Path

from clef_core.common.errors import ClefError
from preprocessing.readers.base import FrameItem, Reader, SequenceRef
from preprocessing.readers.bp4d import BP4DPlusReader, BP4DReader
from preprocessing.readers.disfa import DISFAReader
from preprocessing.readers.fer import AffectNet7Reader, AffectNet8Reader, FERPlusReader, RAFDBReader
from preprocessing.readers.video import VideoFolderReader

READERS: dict[str, type[Reader]] = {
    r.name: r
    for r in (
        BP4DReader,
        BP4DPlusReader,
        DISFAReader,
        RAFDBReader,
        AffectNet7Reader,
        AffectNet8Reader,
        FERPlusReader,
        VideoFolderReader,
    )
}


def get_reader(name: str, root: Path) -> Reader:
    if name not in READERS:
        raise ClefError(f"unknown dataset {name!r}; known: {', '.join(READERS)}")
    return READERS[name](root)


__all__ = ["READERS", "FrameItem", "Reader", "SequenceRef", "get_reader"]
