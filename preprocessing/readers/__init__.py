"""One reader per dataset; `get_reader(name, root)` is the only lookup.

Which reader class reads a dataset is its registry record's `reader` ("module:Class",
`clef_core.common.datasets`): adding a dataset is its record and its reader file.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from clef_core.common.datasets import REGISTRY
from clef_core.common.errors import ClefError
from preprocessing.readers.base import FrameItem, Reader, SequenceRef


def _reader_class(name: str, where: str) -> type[Reader]:
    module, _, cls_name = where.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    if not (isinstance(cls, type) and issubclass(cls, Reader)) or cls.name != name:
        raise TypeError(f"{where} is not the Reader of dataset {name!r} (its registry record)")
    return cls


READERS: dict[str, type[Reader]] = {n: _reader_class(n, d.reader) for n, d in REGISTRY.items()}


def get_reader(name: str, root: Path) -> Reader:
    if name not in READERS:
        raise ClefError(f"unknown dataset {name!r}; known: {', '.join(READERS)}")
    return READERS[name](root)


__all__ = ["READERS", "FrameItem", "Reader", "SequenceRef", "get_reader"]
