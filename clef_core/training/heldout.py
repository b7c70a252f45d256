"""A stage-2 unit's held-out predictions as a table anyone can recompute the metrics from:
`<unit folder>/predictions.parquet`, one row per held-out frame (subject, task, frame, the
targets and the model's scores), with the label space, the decision threshold and the
baseline's majority class in the file's metadata.

Scores come from the workers in whatever order Ray Data streamed the test split; each carries
its row's key (`cache.row_key`), mapped back here to (subject, task, frame) from the shards'
id columns (no images read).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clef_core.common.errors import ClefError
from clef_core.common.storage import Where
from clef_core.method.labels import LabelSpace
from clef_core.method.metrics import majority_class
from clef_core.method.steps import Predictions, metrics_of
from clef_core.training.cache import read_table, row_key, shard_files
from clef_core.training.data import keep_rows

log = logging.getLogger(__name__)
FILE = "predictions.parquet"
META_KEY = b"clef"


def _split(
    shard_dir: Where, dataset: str, parts: tuple[int, ...] | None, column: str, ids: bool
) -> pa.Table:
    """A split's id and label columns (as `data.load_split` keeps them), straight from the
    shards: milliseconds, no Ray job."""
    names = ["subject", "task", "frame", "part", column] if ids else ["part", column]
    tables = [read_table(f, names) for f in shard_files(shard_dir, dataset)]
    return keep_rows(pa.concat_tables(tables), parts, column)


def training_majority(
    shard_dir: Where, dataset: str, parts: tuple[int, ...] | None, n_classes: int
) -> int:
    """The most frequent expression among the training split's labelled rows (ours: the FER
    baseline; chosen from training labels only)."""
    rows = _split(shard_dir, dataset, parts, "expression", ids=False)
    return majority_class(np.asarray(rows["expression"].to_numpy()), n_classes)


def identities(
    shard_dir: Where, dataset: str, parts: tuple[int, ...] | None, space: LabelSpace
) -> dict[int, tuple[str, str | None, int]]:
    """Row key -> (subject, task, frame) over the labelled rows of `parts`."""
    rows = _split(shard_dir, dataset, parts, space.column, ids=True)
    out: dict[int, tuple[str, str | None, int]] = {}
    for s, t, f in zip(
        rows["subject"].to_pylist(), rows["task"].to_pylist(), rows["frame"].to_pylist(),
        strict=True,
    ):  # fmt: skip
        key = row_key(s, t, f)
        if out.setdefault(key, (s, t, f)) != (s, t, f):
            raise ClefError(f"{dataset}: rows {out[key]} and {(s, t, f)} share a row key")
    return out


def predictions_table(
    pred: Predictions,
    space: LabelSpace,
    ids: dict[int, tuple[str, str | None, int]],
    meta: dict[str, Any],
) -> pa.Table:
    """One row per held-out frame, sorted by subject, task and frame. Predictions without
    row keys (a data path that does not carry them) keep the targets and scores, so every
    metric still recomputes, with empty ids and a warning: a unit is not failed for it."""
    if pred.rows is None:
        log.warning("held-out predictions without row keys: predictions.parquet has no ids")
        subject = task = frame = (None,) * len(pred.scores)
    else:
        missing = [int(k) for k in pred.rows if int(k) not in ids]
        if missing:
            raise ClefError(f"{len(missing)} predicted rows are not in the held-out split")
        subject, task, frame = zip(*(ids[int(k)] for k in pred.rows), strict=True)
    columns: dict[str, Any] = {
        "subject": pa.array(subject, pa.string()),
        "task": pa.array(task, pa.string()),
        "frame": pa.array(frame, pa.int32()),
    }
    if space.kind == "au":
        for c, au in enumerate(space.labels):
            columns[f"target_au{au}"] = pa.array(pred.targets[:, c], pa.int8())
        for c, au in enumerate(space.labels):
            columns[f"score_au{au}"] = pa.array(pred.scores[:, c], pa.float32())
    else:
        columns["target"] = pa.array(pred.targets, pa.int16())
        for c, name in enumerate(space.labels):
            columns[f"score_{name}"] = pa.array(pred.scores[:, c], pa.float32())
    info = {"kind": space.kind, "labels": list(space.labels), "ids": pred.rows is not None}
    info |= meta
    table = pa.table(columns).replace_schema_metadata({META_KEY: json.dumps(info).encode()})
    return table.sort_by([("subject", "ascending"), ("task", "ascending"), ("frame", "ascending")])


def read_predictions(path: Path) -> tuple[Predictions, LabelSpace, dict[str, Any]]:
    """Targets and scores of a predictions.parquet (features are not stored: empty)."""
    table = pq.read_table(path)
    info = json.loads((table.schema.metadata or {})[META_KEY])
    space = LabelSpace(info["kind"], tuple(info["labels"]))
    if space.kind == "au":
        targets = np.stack([table[f"target_au{a}"].to_numpy() for a in space.labels], 1)
        scores = np.stack([table[f"score_au{a}"].to_numpy() for a in space.labels], 1)
    else:
        targets = table["target"].to_numpy()
        scores = np.stack([table[f"score_{c}"].to_numpy() for c in space.labels], 1)
    empty = np.zeros((len(table), 0), np.float32)
    return Predictions(scores, targets, empty), space, info


def metrics_from(path: Path) -> dict[str, float]:
    """Every reported held-out metric, recomputed from a predictions.parquet."""
    pred, space, info = read_predictions(path)
    return metrics_of(pred, space, info["threshold"], info.get("majority_class"))


def write_held_out(
    pred: Predictions,
    space: LabelSpace,
    out: Path,
    shard_dir: Where,
    dataset: str,
    train_parts: tuple[int, ...] | None,
    test_parts: tuple[int, ...] | None,
    threshold: float,
) -> dict[str, float]:
    """Write `out` (a predictions.parquet) and return the metrics recomputed from it."""
    meta: dict[str, Any] = {"dataset": dataset, "threshold": threshold}
    meta["test_parts"] = list(test_parts) if test_parts is not None else None
    if space.kind == "fer":
        meta["majority_class"] = training_majority(shard_dir, dataset, train_parts, space.n)
        meta["majority_class_name"] = space.labels[meta["majority_class"]]
    table = predictions_table(pred, space, identities(shard_dir, dataset, test_parts, space), meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(out)
    return metrics_from(out)
