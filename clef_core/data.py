"""Ray Data: shards -> decoded, augmented batches for Ray Train workers, streamed.

`load_split` reads a dataset's Parquet shards lazily and keeps the rows of the wanted fold
parts (and, for stage 2, rows with at least one known label); `decode_batches` turns JPEG
bytes into model-sized tensors (two augmented views for stage 1) in `map_batches`, so decoding
runs in parallel Ray tasks and is never materialised. Workers read their share with
`ray.train.get_dataset_shard(name).iter_torch_batches(...)`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch

from clef_core.augment import augment, resize
from clef_core.config import AugmentConfig
from clef_core.errors import ClefError

COLUMNS = ["dataset", "subject", "task", "frame", "image", "au", "expression", "part", "face_found"]


def row_key(subject: str | None, task: str | None, frame: int) -> int:
    """A row's identity (subject, task, frame) as one non-negative int64, so it can ride along
    the tensor batches (strings cannot) and evaluation can say which frame each score is for
    (`clef_core.heldout` maps it back and checks it is unique)."""
    import hashlib

    # A missing task may arrive as None or as NaN (numpy/pandas): both are "no task".
    subject, task = (v if isinstance(v, str) else "" for v in (subject, task))
    text = f"{subject}\0{task}\0{int(frame)}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def row_keys(subjects: Sequence, tasks: Sequence, frames: Sequence) -> np.ndarray:
    """`row_key` of each row of a batch's id columns: the int64 `row` column of evaluation
    batches (what `train.predict` collects)."""
    return np.array(
        [row_key(s, t, f) for s, t, f in zip(subjects, tasks, frames, strict=True)], np.int64
    )


def shard_files(shard_dir: Path, dataset: str) -> list[str]:
    import json

    manifest = shard_dir / dataset / "manifest.json"
    if not manifest.is_file():
        raise ClefError(
            f"no shards for {dataset} in {shard_dir}: run `clef preprocess --dataset {dataset}` first"
        )
    names = json.loads(manifest.read_text())["shards"]
    return [str(shard_dir / dataset / n) for n in names]


def keep_rows(table: pa.Table, parts: Sequence[int] | None, labels: str | None) -> pa.Table:
    """Rows of the wanted parts; with labels="au"/"expression", rows with a known label."""
    mask = pc.is_in(table["part"], pa.array(parts, pa.int8())) if parts is not None else None
    if labels == "au":  # at least one AU known (not -1)
        label_mask = pa.array([any(v >= 0 for v in a) for a in table["au"].to_pylist()])
        mask = label_mask if mask is None else pc.and_(mask, label_mask)
    elif labels == "expression":
        label_mask = pc.greater_equal(table["expression"], 0)
        mask = label_mask if mask is None else pc.and_(mask, label_mask)
    return table if mask is None else table.filter(mask)


def load_split(
    shard_dir: Path,
    dataset: str,
    parts: Sequence[int] | None = None,
    labels: str | None = None,
    shuffle_seed: int | None = None,
) -> ray.data.Dataset:
    """A lazy Ray Dataset of one dataset's rows in `parts` (all when None); given a seed, its
    files are read in a new (seeded) random order on every pass (training epochs)."""
    files = shard_files(shard_dir, dataset)
    # The reader is chosen when the plan is built, here (see runtime.SERVICE_ENV for why V1).
    ray.data.DataContext.get_current().use_datasource_v2 = os.environ.get(
        "RAY_DATA_USE_DATASOURCE_V2", "0"
    ) not in ("0", "false")
    shuffle = None if shuffle_seed is None else ray.data.FileShuffleConfig(seed=shuffle_seed)
    ds = ray.data.read_parquet(files, shuffle=shuffle).select_columns(COLUMNS)
    return ds.map_batches(
        keep_rows, batch_format="pyarrow", fn_kwargs={"parts": parts, "labels": labels}
    )


def _decode(images: Sequence[bytes]) -> np.ndarray:
    """JPEG bytes -> uint8 RGB [B, H, W, 3]."""
    out = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for b in images]
    return np.stack(out)


def decode_batch(
    batch: dict[str, Any],
    size: int,
    views: int,
    augment_cfg: AugmentConfig,
    activity_index: dict[str, int] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A Ray Data batch (numpy) -> model inputs.

    views=0: `image` resized and `row` (`row_key`, int64) (evaluation); 1: `image` augmented (stage 2); 2: `view1` and
    `view2`, two independent augmentations (stage 1). Labels pass through as `au`
    (int8 [B, C]) and `expression`; `activity` (int64) comes from "dataset/task".
    """
    rgb = _decode(batch["image"])
    # Each batch gets its own random stream (derived from its content, so reruns repeat).
    gen = torch.Generator().manual_seed(
        seed + int(np.frombuffer(batch["image"][0][-8:], np.uint8).sum())
    )
    out: dict[str, np.ndarray] = {}
    if views == 0:
        out["image"] = resize(rgb, size).numpy()
        out["row"] = row_keys(batch["subject"], batch["task"], batch["frame"])
    elif views == 1:
        out["image"] = augment(rgb, size, augment_cfg, gen).numpy()
    else:
        out["view1"] = augment(rgb, size, augment_cfg, gen).numpy()
        out["view2"] = augment(rgb, size, augment_cfg, gen).numpy()
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
    size: int,
    views: int,
    augment_cfg: AugmentConfig,
    activity_index: dict[str, int] | None = None,
    num_cpus: float = 1.0,
    seed: int = 0,
    concurrency: int | None = None,
) -> ray.data.Dataset:
    """Decode (and augment) in parallel Ray tasks (at most `concurrency` at once, None = as
    many as fit); streamed, never materialised."""
    return ds.map_batches(
        decode_batch,
        batch_format="numpy",
        batch_size=64,
        num_cpus=num_cpus,
        compute=ray.data.TaskPoolStrategy(size=concurrency),
        fn_kwargs={
            "size": size,
            "views": views,
            "augment_cfg": augment_cfg,
            "activity_index": activity_index,
            "seed": seed,
        },
    )


def even_activity_shares(rows_per_task: dict[str, int]) -> dict[str, float]:
    """Task -> share of its frames to keep so every task contributes about as many as the
    smallest (rows without a task are left out of stage 1's activity labels anyway)."""
    counts = {t: n for t, n in rows_per_task.items() if t != "None" and n > 0}
    if not counts:
        return {}
    least = min(counts.values())
    return {t: least / n for t, n in counts.items()}


def _sample_tasks(batch: pa.Table, keep: dict[str, float]) -> pa.Table:
    """Keep each row with its task's share, decided by a hash of the row's image: the same
    rows every epoch and every run (a fixed even sample, as the paper's)."""
    import zlib

    tasks = batch["task"].to_pylist()
    images = batch["image"].to_pylist()
    mask = [
        t is not None and (zlib.crc32(img[-256:]) % 10_000) < keep.get(t, 0.0) * 10_000
        for t, img in zip(tasks, images, strict=True)
    ]
    return batch.filter(pa.array(mask, pa.bool_()))


def balance_activities(ds: ray.data.Dataset, keep: dict[str, float]) -> ray.data.Dataset:
    return ds.map_batches(_sample_tasks, batch_format="pyarrow", fn_kwargs={"keep": keep})
