"""The typed shard manifest (`clef_core.common.manifest`): what is written reads back the same,
rows without a task are their own field (never a task named "None"), and a manifest this code
cannot read (the earlier untyped format, cut short, a field missing) is one error that says
to run `clef preprocess` again, with the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clef_core.common.errors import ClefError
from clef_core.common.manifest import (
    Manifest,
    Shard,
    manifest_path,
    read_manifest,
    recorded_shards,
    write_manifest,
)


def _manifest(**changes: object) -> Manifest:
    fields: dict[str, object] = {
        "dataset": "bp4d",
        "au_ids": [1, 2, 4],
        "classes": [],
        "rows": 60,
        "rows_per_subject": {"F001": 40, "M007": 20},
        "rows_per_task": {"T10": 10, "T2": 20, "T1": 20},
        "rows_without_task": 10,
        "rows_per_part": {-1: 10, 0: 50},
        "no_face": 3,
        "decode_reduction": {1: 1, 2: 3},
        "unreadable": 1,
        "unreadable_examples": ["F001_T1 frame 7: unreadable image"],
        "failed_sequences": [],
        "issues": ["a label file lacks AU 12"],
        "shards": {"F001_T1.parquet": Shard(bytes=1000, rows=20), "M007_T2.parquet": {"bytes": 9, "rows": 40}},
        "source_root": "/data/BP4D",
        "input_hash": "0123456789abcdef",
        "code_version": "0.1.0",
        "image_size": 112,
        "options": {"force": "False"},
    }  # fmt: skip
    return Manifest.model_validate(fields | changes)


def test_a_written_manifest_reads_back_the_same(tmp_path: Path) -> None:
    (tmp_path / "bp4d").mkdir()
    written = _manifest()
    path = write_manifest(tmp_path, written)
    assert path == manifest_path(tmp_path, "bp4d") and not list((tmp_path / "bp4d").glob(".*"))
    read = read_manifest(tmp_path, "bp4d")
    assert read == written
    assert read.tasks == ["T1", "T2", "T10"]  # activity order, not string order
    assert read.rows_per_part == {-1: 10, 0: 50} and read.rows_without_task == 10
    assert read.shard_names == ["F001_T1.parquet", "M007_T2.parquet"]
    assert read.shards["M007_T2.parquet"] == Shard(bytes=9, rows=40)
    raw = json.loads(path.read_text())
    assert raw["format"] == 2 and "None" not in raw["rows_per_task"]
    assert recorded_shards(tmp_path, "bp4d") == written.shards


def _old_format() -> dict:
    """A manifest as `clef preprocess` wrote it before the typed one (format 1)."""
    return {
        "dataset": "disfa", "au_ids": [1, 2], "classes": [], "rows": 30,
        "rows_per_subject": {"SN001": 30}, "rows_per_task": {"None": 30},
        "rows_per_part": {"0": 30}, "no_face": 0, "decode_reduction": {"1": 1},
        "unreadable": 0, "unreadable_examples": [], "failed_sequences": [], "issues": [],
        "shards": ["SN001.parquet"], "shard_stats": {"SN001.parquet": {"bytes": 5, "rows": 30}},
        "source_root": "/data/DISFA", "input_hash": "h", "code_version": "0.1.0",
        "image_size": 112, "options": {},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (json.dumps(_old_format()), "it is in format 1, this clef reads format 2"),
        (json.dumps(_old_format())[:100], "it does not read as JSON"),
        (json.dumps({k: v for k, v in _manifest().model_dump(mode="json").items() if k != "rows"}
                    | {"dataset": "disfa"}), "rows: Field required"),
        (json.dumps(_manifest(dataset="disfa").model_dump(mode="json") | {"rows": "many"}),
         "rows: Input should be a valid integer"),
    ],
    ids=["format 1", "cut short", "field missing", "wrong type"],
)  # fmt: skip
def test_a_manifest_it_cannot_read_says_to_preprocess_again(
    tmp_path: Path, content: str, problem: str
) -> None:
    (tmp_path / "disfa").mkdir()
    path = manifest_path(tmp_path, "disfa")
    path.write_text(content)
    with pytest.raises(ClefError) as err:
        read_manifest(tmp_path, "disfa")
    message = str(err.value)
    assert message.startswith(f"{path} is not a manifest this clef reads ({problem}")
    root = "<the dataset's root>" if problem.startswith("it does not") else "/data"
    assert (
        f"preprocess again (finished shards are kept): clef preprocess --dataset disfa --root {root}"
        in message
    )
    assert message.endswith(f"--out {tmp_path}")
    assert recorded_shards(tmp_path, "disfa") == {}  # a rerun rebuilds the manifest from the shards
