"""Ray Data over the shards: fold-part and label filtering, decoding, stage-1 views, streaming
into torch batches (a real local Ray instance)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from clef_core.common.errors import ClefError
from clef_core.method.augment import model_views, resize
from clef_core.method.config import AugmentConfig
from clef_core.training.cache import cached_split, decoded_arrays, shrink
from clef_core.training.data import load_split, model_inputs

ACTIVITIES = {f"bp4d/T{k}": k - 1 for k in range(1, 9)}


def all_rows(shard_dir: Path, dataset: str) -> list[dict]:
    return [
        r
        for p in sorted((shard_dir / dataset).glob("*.parquet"))
        for r in pq.read_table(p).to_pylist()
    ]


def test_split_keeps_wanted_parts_and_labeled_rows(shard_dir: Path, local_ray: None) -> None:
    rows = load_split(shard_dir, "bp4d", parts=[0, 1], labels="au").take_all()
    expected = [r for r in all_rows(shard_dir, "bp4d") if r["part"] in (0, 1) and max(r["au"]) >= 0]
    assert len(rows) == len(expected) > 0
    assert {r["part"] for r in rows} == {0, 1}
    everything = load_split(shard_dir, "bp4d").count()
    assert (
        everything == len(all_rows(shard_dir, "bp4d")) > len(rows)
    )  # unlabeled frames kept for stage 1
    fer = load_split(shard_dir, "rafdb", parts=[1], labels="expression").take_all()
    assert fer and all(r["part"] == 1 and r["expression"] >= 0 for r in fer)


def test_stage1_batches_have_two_views_and_activities(shard_dir: Path, local_ray: None) -> None:
    """The pipeline delivers compact uint8 images at the source side; the worker makes the
    two augmented views (on its device)."""
    ds = model_inputs(load_split(shard_dir, "bp4d", parts=[0, 1]), 72, ACTIVITIES)
    batch = next(iter(ds.iter_torch_batches(batch_size=16)))
    assert batch["image"].shape == (16, 72, 72, 3) and batch["image"].dtype == torch.uint8
    views = model_views(batch, 64, 2, AugmentConfig(), torch.Generator().manual_seed(0))
    assert views["view1"].shape == (16, 3, 64, 64) and views["view1"].dtype == torch.float32
    assert not torch.equal(views["view1"], views["view2"]) and "image" not in views
    assert batch["activity"].dtype == torch.int64 and set(batch["activity"].tolist()) <= set(
        range(8)
    )
    assert batch["au"].shape == (16, 12)


def test_training_batches_mix_sequences(shard_dir: Path, local_ray: None) -> None:
    """A shard is one sequence in frame order: streamed as it is, a batch is one task of one
    subject. Files read in a shuffled order and a local shuffle buffer (what the training loop
    asks for, compute.shuffle_buffer) mix several tasks into every batch."""

    def tasks_per_batch(shuffle_seed: int | None, buffer: int | None) -> list[int]:
        ds = model_inputs(
            load_split(shard_dir, "bp4d", parts=[0, 1], shuffle_seed=shuffle_seed), 64, ACTIVITIES
        )
        batches = ds.iter_torch_batches(
            batch_size=8, drop_last=True, local_shuffle_buffer_size=buffer, local_shuffle_seed=0
        )
        return [len(set(b["activity"].tolist())) for b in batches]

    streamed, mixed = tasks_per_batch(None, None), tasks_per_batch(0, 128)
    assert np.mean(streamed) < 1.5  # sequences of 20 frames: most batches inside one
    assert min(mixed) >= 2 and np.mean(mixed) >= 4


def test_eval_batches_are_plain_resizes(shard_dir: Path, local_ray: None) -> None:
    """No randomness at evaluation: every pass yields exactly the plain resizes of the shard
    images (Ray Data does not keep row order between passes, so rows are compared as sets)."""
    ds = model_inputs(load_split(shard_dir, "disfa", parts=[2], labels="au"), 72)
    rows = [r for r in all_rows(shard_dir, "disfa") if r["part"] == 2 and max(r["au"]) >= 0]
    images = np.stack(
        [
            cv2.imdecode(np.frombuffer(r["image"], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
            for r in rows
        ]
    )
    expected = resize(shrink(images, 72), 64).numpy()

    def ordered(x: np.ndarray) -> np.ndarray:
        return x[np.lexsort(x.reshape(len(x), -1)[:, :256].T[::-1])]

    for _ in range(2):
        got = np.concatenate([resize(b["image"], 64) for b in ds.iter_batches(batch_size=32)])
        assert got.shape == expected.shape == (len(rows), 3, 64, 64)
        assert np.allclose(ordered(got), ordered(expected), atol=1e-5)


def test_decoded_cache_gives_the_streamed_rows(shard_dir: Path, local_ray: None) -> None:
    """compute.cache_decoded: the arrays decoded once hold the rows (images and labels) the
    streaming pipeline delivers, for each filter (parts, labelled rows, the activity sample
    of stage 1), and a second call reads the cache instead of decoding again."""
    arrays = decoded_arrays(shard_dir, "bp4d", 72)
    cache = sorted((shard_dir.parent / "cache").glob("bp4d-72px-*.npz"))
    assert len(cache) == 1 and arrays["image"].dtype == np.uint8
    stamp = cache[0].stat().st_mtime_ns
    assert decoded_arrays(shard_dir, "bp4d", 72)["image"].shape == arrays["image"].shape
    assert cache[0].stat().st_mtime_ns == stamp

    def rows(columns: dict[str, np.ndarray]) -> list[tuple]:
        keys = sorted(k for k in columns if k != "image")
        return sorted(
            (int(img.astype(np.int64).sum()), *(tuple(np.ravel(columns[k][i])) for k in keys))
            for i, img in enumerate(columns["image"])
        )

    # A stage-1 sample (`selection`): per task, the rows up to its median row key.
    in_part = arrays["part"] == 2
    limit = {
        str(t): int(np.median(arrays["row"][in_part & (arrays["task"] == t)]))
        for t in np.unique(arrays["task"][in_part])
    }
    cases = [
        (load_split(shard_dir, "bp4d", [0, 1], "au"), cached_split(arrays, [0, 1], "au")),
        (
            load_split(shard_dir, "bp4d", [2], limit=limit),
            cached_split(arrays, [2], None, ACTIVITIES, limit, shuffle_seed=3),
        ),
    ]
    for streamed, cached in cases:
        index = ACTIVITIES if "activity" in cached else None
        got = [b for b in model_inputs(streamed, 72, index).iter_batches(batch_size=64)]
        delivered = {k: np.concatenate([b[k] for b in got]) for k in cached}
        assert rows(delivered) == rows(cached) and len(cached["image"]) > 0


def test_missing_shards_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClefError, match="run `clef preprocess --dataset bp4d` first"):
        load_split(tmp_path, "bp4d")
