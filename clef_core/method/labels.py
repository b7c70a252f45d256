"""What a dataset's labels are: AU ids (multi-label) or expression classes (multi-class)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clef_core.method.text import AU_NAMES


@dataclass(frozen=True)
class LabelSpace:
    kind: Literal["au", "fer"]
    labels: tuple  # AU ids (int) or expression keys (str), in the shards' order

    @property
    def n(self) -> int:
        return len(self.labels)

    @classmethod
    def aus(cls, au_ids: list[int] | tuple[int, ...]) -> LabelSpace:
        unknown = [a for a in au_ids if a not in AU_NAMES]
        if unknown:
            raise ValueError(f"no label text for AU {unknown[0]}")
        return cls("au", tuple(int(a) for a in au_ids))

    @classmethod
    def expressions(cls, classes: list[str] | tuple[str, ...]) -> LabelSpace:
        return cls("fer", tuple(classes))
