"""What a dataset's labels are: AU ids (multi-label) or expression classes (multi-class)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from clef_core.method.text import AU_NAMES

if TYPE_CHECKING:
    from clef_core.common.storage import Where


@dataclass(frozen=True)
class LabelSpace:
    kind: Literal["au", "fer"]
    labels: tuple  # AU ids (int) or expression keys (str), in the shards' order

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def column(self) -> str:
        """The shard column (and batch key) holding these labels: `au` or `expression`."""
        return "au" if self.kind == "au" else "expression"

    @classmethod
    def aus(cls, au_ids: list[int] | tuple[int, ...]) -> LabelSpace:
        unknown = [a for a in au_ids if a not in AU_NAMES]
        if unknown:
            raise ValueError(f"no label text for AU {unknown[0]}")
        return cls("au", tuple(int(a) for a in au_ids))

    @classmethod
    def expressions(cls, classes: list[str] | tuple[str, ...]) -> LabelSpace:
        return cls("fer", tuple(classes))


def shard_label_space(shard_dir: Where, dataset: str) -> LabelSpace:
    """The labels `dataset`'s shards carry, from its manifest (a checkpoint's own are
    `clef_core.method.checkpoint.label_space_of`)."""
    from clef_core.common.manifest import read_manifest

    m = read_manifest(shard_dir, dataset)
    return LabelSpace.aus(m.au_ids) if m.au_ids else LabelSpace.expressions(m.classes)
