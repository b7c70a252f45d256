"""Parquet shards (the contract between preprocessing and training, DESIGN.md).

One shard file per sequence (or per chunk of images), written to a temporary name and then
renamed, so a file that exists is complete: reruns skip it, and a killed run leaves no half
shard. The manifest (`clef_core.common.manifest`) is written last.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("subject", pa.string()),
        ("task", pa.string()),
        ("frame", pa.int32()),
        ("image", pa.binary()),
        ("face_found", pa.bool_()),
        ("face_score", pa.float32()),
        ("landmarks", pa.list_(pa.float32())),
        ("au", pa.list_(pa.int8())),
        ("expression", pa.int16()),
        ("part", pa.int8()),
    ]
)


def shard_path(shard_dir: Path, dataset: str, key: str) -> Path:
    return shard_dir / dataset / f"{key}.parquet"


# zstd for the label and id columns; none for the JPEG bytes, which it cannot shrink (it only
# costs CPU time on every write and read).
COMPRESSION = {name: "none" if name == "image" else "zstd" for name in SCHEMA.names}
ROW_GROUP = 256  # rows buffered before they go to disk: memory stays flat with video length


class ShardWriter:
    """Streams rows into a Parquet file under a temporary name; `commit()` renames it into
    place, `abort()` (or leaving without commit) deletes it. Same rows, same bytes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.writer = pq.ParquetWriter(self.tmp, SCHEMA, compression=COMPRESSION)
        self.columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
        self.rows = 0

    def add(self, row: dict[str, Any]) -> None:
        # Buffered column-wise: Table.from_pydict is much cheaper than from_pylist per row.
        for name, column in self.columns.items():
            column.append(row[name])
        self.rows += 1
        if len(self.columns["frame"]) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.columns["frame"]:
            self.writer.write_table(pa.Table.from_pydict(self.columns, schema=SCHEMA))
            self.columns = {name: [] for name in SCHEMA.names}

    def commit(self, metadata: dict[str, str] | None = None) -> None:
        """Finish the file, with `metadata` as key-value pairs in its footer."""
        self._flush()
        if metadata:
            self.writer.add_key_value_metadata(metadata)
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)
