"""Parquet shards (the contract between preprocessing and training, DESIGN.md) and the manifest.

One shard file per sequence (or per chunk of images), written to a temporary name and then
renamed, so a file that exists is complete: reruns skip it, and a killed run leaves no half
shard. The manifest is written last.
"""

from __future__ import annotations

import json
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
        ("au", pa.list_(pa.int8())),
        ("expression", pa.int16()),
        ("part", pa.int8()),
    ]
)


def shard_path(shard_dir: Path, dataset: str, key: str) -> Path:
    return shard_dir / dataset / f"{key}.parquet"


def write_shard(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows atomically (temp file + rename); deterministic bytes for the same rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=1024)
    os.replace(tmp, path)


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_manifest(shard_dir: Path, dataset: str) -> dict[str, Any]:
    from clef_core.errors import ClefError

    path = shard_dir / dataset / "manifest.json"
    if not path.is_file():
        raise ClefError(
            f"no shards for {dataset} in {shard_dir}: run `clef preprocess --dataset {dataset}` first"
        )
    return json.loads(path.read_text())
