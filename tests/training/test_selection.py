"""The rows stage 1 reads (the paper, section 4.1.1), on synthetic shards with uncoded frames and
activities of unequal length: BP4D's coded frames of the training parts, every one, however
unequal its tasks; BP4D+'s frames, coded or not, min(cap, frames of the activity) per activity.
Both pipelines (Ray Data streaming, the decoded cache) read exactly those rows."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from clef_core.training.cache import cached_split, decoded_arrays, row_key
from clef_core.training.data import load_split
from clef_core.training.selection import stage1_rows

# Frames kept per sequence of these tasks: BP4D+'s activities become unequal (20 each before).
SHORTENED = {"T2": 3, "T5": 8}


def _unequal(shard_dir: Path, dataset: str, out: Path) -> Path:
    """A copy of `dataset`'s shards in which the tasks in SHORTENED keep their first frames."""
    target = out / "shards" / dataset
    shutil.copytree(shard_dir / dataset, target)
    manifest = json.loads((target / "manifest.json").read_text())
    rows = 0
    for name in manifest["shards"]:
        table = pq.read_table(target / name)
        task = table["task"][0].as_py() if len(table) else None
        if task in SHORTENED:
            table = table.slice(0, SHORTENED[task])
            pq.write_table(table, target / name)
        rows += len(table)
    manifest["rows"] = rows
    (target / "manifest.json").write_text(json.dumps(manifest))
    return out / "shards"


def _ids(rows: list[dict]) -> set[tuple[str, str, int]]:
    return {(r["subject"], r["task"], int(r["frame"])) for r in rows}


def _shard_rows(shards: Path, dataset: str) -> list[dict]:
    columns = ["subject", "task", "frame", "part", "au"]
    return [
        r
        for p in sorted((shards / dataset).glob("*.parquet"))
        for r in pq.read_table(p, columns=columns).to_pylist()
    ]


def _read_both(shards: Path, dataset: str, parts: list[int], sel: object) -> tuple[set, set]:
    """(subject, task, frame) of the rows the streaming pipeline and the cache deliver."""
    streamed = load_split(shards, dataset, parts, sel.labels, limit=sel.limit)  # type: ignore[attr-defined]
    by_key = {row_key(*i): i for i in _ids(_shard_rows(shards, dataset))}
    arrays = decoded_arrays(shards, dataset, 32)
    cached = cached_split(arrays, parts, sel.labels, None, sel.limit)  # type: ignore[attr-defined]
    return _ids(streamed.take_all()), {by_key[int(k)] for k in cached["row"]}


def test_bp4d_stage1_reads_every_coded_frame_of_its_training_parts(
    shard_dir: Path, tmp_path: Path, local_ray: None
) -> None:
    shards = _unequal(shard_dir, "bp4d", tmp_path)
    rows = [r for r in _shard_rows(shards, "bp4d") if r["part"] in (0, 1)]
    coded = _ids([r for r in rows if max(r["au"]) >= 0])
    assert 0 < len(coded) < len(rows)  # the synthetic BP4D has uncoded frames
    per_task = Counter(t for _, t, _ in coded)
    assert min(per_task.values()) < max(per_task.values())  # unequal tasks
    # A cap far below every task's size: BP4D is not balanced, so it changes nothing.
    sel = stage1_rows(shards, "bp4d", (0, 1), 2)
    assert sel.labels == "au" and sel.limit is None and sel.cap is None
    assert sel.kept == dict(per_task) and sel.rows == len(coded)
    streamed, cached = _read_both(shards, "bp4d", [0, 1], sel)
    assert streamed == cached == coded


def test_bp4d_plus_stage1_reads_min_cap_and_activity_frames(
    shard_dir: Path, tmp_path: Path, local_ray: None, caplog: pytest.LogCaptureFixture
) -> None:
    shards = _unequal(shard_dir, "bp4d_plus", tmp_path)
    parts = [1, 2, 3]  # fold 1's training parts
    rows = [r for r in _shard_rows(shards, "bp4d_plus") if r["part"] in parts]
    available = Counter(r["task"] for r in rows)
    cap = 30
    short = sorted(t for t, n in available.items() if n < cap)
    assert short and len(short) < len(available)  # some activities above the cap, some below
    with caplog.at_level(logging.INFO, logger="clef_core.training.selection"):
        sel = stage1_rows(shards, "bp4d_plus", tuple(parts), cap)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = {t: min(cap, n) for t, n in available.items()}
    assert sel.kept == expected and sel.available == dict(available) and sel.labels is None
    streamed, cached = _read_both(shards, "bp4d_plus", parts, sel)
    assert streamed == cached
    assert Counter(t for _, t, _ in streamed) == expected
    # Coded or not: BP4D+ pre-trains on all its frames (only 4 of its 10 tasks are coded).
    uncoded = _ids([r for r in rows if max(r["au"], default=-1) < 0])
    assert streamed & uncoded
    # The same sample again (a fixed sample, not a new draw per run or epoch).
    assert stage1_rows(shards, "bp4d_plus", tuple(parts), cap).limit == sel.limit
    # Said in the log (one line) and in the unit's result.
    assert len(warned) == 1 and all(f"{t} {available[t]}" in warned[0] for t in short)
    record = sel.record()
    assert record["stage1_cap_bp4d_plus"] == cap
    assert all(record[f"stage1_available_bp4d_plus_{t}"] == available[t] for t in short)
    assert record["stage1_rows_bp4d_plus"] == sum(expected.values())
    assert np.isclose(sum(record[f"stage1_rows_bp4d_plus_{t}"] for t in expected), sel.rows)
