"""Ray Data: shards -> decoded, augmented batches for Ray Train workers, streamed.

`load_split` reads a dataset's Parquet shards lazily and keeps the rows of the wanted fold
parts (rows with at least one known label for stage 2 and BP4D's stage 1; for BP4D+'s stage
1, the activity sample `clef_core.training.selection` chose); `decode_batches` turns JPEG
bytes into model-sized tensors (two augmented views for stage 1) in `map_batches`, so decoding
runs in parallel Ray tasks and is never materialised. Workers read their share with
`ray.train.get_dataset_shard(name).iter_torch_batches(...)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from clef_core.common.runtime import datasource_v2
from clef_core.common.storage import Where
from clef_core.training.cache import COLUMNS, decode_jpegs, row_keys, shard_files, shrink


def keep_rows(
    table: pa.Table,
    parts: Sequence[int] | None,
    labels: str | None,
    limit: dict[str, int] | None = None,
    subjects: Sequence[str] | None = None,
) -> pa.Table:
    """Rows of the wanted parts; with labels="au"/"expression", rows with a known label; with
    `limit` (task -> largest row key, `selection.Stage1Rows`), the stage-1 sample of each
    activity: rows whose `cache.row_key` is at most their task's limit; with `subjects`
    (stage 2's label fraction, `stages.label_subjects`), only those subjects' rows."""
    mask = pc.is_in(table["part"], pa.array(parts, pa.int8())) if parts is not None else None
    if labels == "au":  # at least one AU known (not -1)
        label_mask = pa.array([any(v >= 0 for v in a) for a in table["au"].to_pylist()])
        mask = label_mask if mask is None else pc.and_(mask, label_mask)
    elif labels == "expression":
        label_mask = pc.greater_equal(table["expression"], 0)
        mask = label_mask if mask is None else pc.and_(mask, label_mask)
    if limit is not None:
        tasks = table["task"].to_pylist()
        keys = row_keys(table["subject"].to_pylist(), tasks, table["frame"].to_pylist())
        bound = np.array([limit.get(t, -1) if t else -1 for t in tasks], np.int64)
        sample_mask = pa.array(keys <= bound)
        mask = sample_mask if mask is None else pc.and_(mask, sample_mask)
    if subjects is not None:
        subject_mask = pc.is_in(table["subject"], pa.array(list(subjects), pa.string()))
        mask = subject_mask if mask is None else pc.and_(mask, subject_mask)
    return table if mask is None else table.filter(mask)


def load_split(
    shard_dir: Where,
    dataset: str,
    parts: Sequence[int] | None = None,
    labels: str | None = None,
    shuffle_seed: int | None = None,
    limit: dict[str, int] | None = None,
    subjects: Sequence[str] | None = None,
) -> ray.data.Dataset:
    """A lazy Ray Dataset of one dataset's rows in `parts` (all when None), filtered as
    `keep_rows` says; given a seed, its files are read in a new (seeded) random order on every
    pass (training epochs)."""
    files = shard_files(shard_dir, dataset)
    # The reader is chosen when the plan is built, here (see runtime.SERVICE_ENV for why V1).
    ray.data.DataContext.get_current().use_datasource_v2 = datasource_v2()
    shuffle = None if shuffle_seed is None else ray.data.FileShuffleConfig(seed=shuffle_seed)
    ds = ray.data.read_parquet(
        [f.path for f in files], filesystem=files[0].fs if files else None, shuffle=shuffle
    ).select_columns(COLUMNS)
    return ds.map_batches(
        keep_rows,
        batch_format="pyarrow",
        fn_kwargs={"parts": parts, "labels": labels, "limit": limit, "subjects": subjects},
    )


def decode_batch(
    batch: dict[str, Any], side: int, activity_index: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """A Ray Data batch (numpy) -> uint8 `image` [B, side, side, 3] (shrunk when the shards
    are larger) and labels: `au` (int8 [B, C], 1/0/-1), `expression`, and `activity` (int64)
    from "dataset/task" when an index is given. Augmentation happens on the training worker
    (`augment.model_views`), on its device, so what travels is compact uint8. `row` (int64,
    `cache.row_key`) says which frame each row is, for the held-out predictions."""
    out: dict[str, np.ndarray] = {
        "image": shrink(decode_jpegs(batch["image"]), side),
        "row": row_keys(batch["subject"], batch["task"], batch["frame"]),
    }
    au = batch["au"]
    if len(au) and len(au[0]):
        out["au"] = np.stack([np.asarray(a, np.int8) for a in au])
    out["expression"] = np.asarray(batch["expression"], np.int64)
    if activity_index is not None:
        keys = [f"{d}/{t}" for d, t in zip(batch["dataset"], batch["task"], strict=True)]
        out["activity"] = np.array([activity_index[k] for k in keys], np.int64)
    return out


def model_inputs(
    ds: ray.data.Dataset,
    side: int,
    activity_index: dict[str, int] | None = None,
    num_cpus: float = 1.0,
    concurrency: int | None = None,
) -> ray.data.Dataset:
    """Decode in parallel Ray tasks (at most `concurrency` at once, None = as many as fit);
    streamed, never materialised."""
    return ds.map_batches(
        decode_batch,
        batch_format="numpy",
        batch_size=64,
        num_cpus=num_cpus,
        compute=ray.data.TaskPoolStrategy(size=concurrency),
        fn_kwargs={"side": side, "activity_index": activity_index},
    )


def in_memory(columns: dict[str, np.ndarray], block_rows: int = 256) -> ray.data.Dataset:
    """A materialised Ray Dataset of numpy columns, in blocks of `block_rows` rows."""
    from ray.data.extensions import ArrowTensorArray

    n = len(columns["image"])
    tables = [
        pa.table(
            {
                k: pa.array(v[i : i + block_rows])
                if v.ndim == 1
                else ArrowTensorArray.from_numpy(v[i : i + block_rows])
                for k, v in columns.items()
            }
        )
        for i in range(0, max(n, 1), block_rows)
    ]
    return ray.data.from_arrow(tables)
