"""stage2.label_fraction (ours): a fraction of the training subjects keeps its labels, the same
subjects on the decoded-cache path and the streaming (shards, Ray Data) path, chosen by
stage2.label_seed; the class weights come from the kept rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clef_core.common.errors import ClefError
from clef_core.method.config import ConfigError, load_config
from clef_core.method.weights import au_pos_weights
from clef_core.training.cache import cached_split, decoded_arrays
from clef_core.training.data import keep_rows, load_split
from clef_core.training.stages import StageJob, label_subjects, plan_stage

TRAIN, TEST = (1, 2), (0,)


def _cfg(shard_dir: Path, fraction: float, seed: int = 0):  # type: ignore[no-untyped-def]
    overrides = [f"data.data_dir={shard_dir.parent}", f"stage2.label_fraction={fraction}"]
    return load_config("cpu-tiny", [*overrides, f"stage2.label_seed={seed}"])


def _training_subjects(shard_dir: Path) -> list[str]:
    tables = [pq.read_table(p) for p in sorted((shard_dir / "bp4d").glob("*.parquet"))]
    rows = keep_rows(pa.concat_tables(tables), TRAIN, "au")
    return sorted(set(rows["subject"].to_pylist()))


def test_label_subjects_is_a_seeded_rounded_up_fraction() -> None:
    pool = [f"S{i:02d}" for i in range(27)] * 3  # repeated, as one subject's many rows
    picks = {seed: label_subjects(pool, 0.1, seed) for seed in range(6)}
    assert all(len(p) == 3 and p == tuple(sorted(p)) for p in picks.values())  # ceil(2.7)
    assert label_subjects(pool[::-1], 0.1, 0) == picks[0]  # the rows' order does not matter
    assert len(set(picks.values())) > 1  # seeds draw different subjects
    assert len(label_subjects(pool, 0.25, 0)) == 7 and len(label_subjects(pool, 1e-6, 0)) == 1
    assert label_subjects(pool, 1.0, 3) == tuple(sorted(set(pool)))
    with pytest.raises(ClefError, match=r"label_fraction must be in \(0, 1\], got 0"):
        label_subjects(pool, 0.0, 0)
    with pytest.raises(ConfigError, match="label_fraction"):
        load_config("cpu-tiny", ["stage2.label_fraction=1.5"])


def test_both_paths_keep_the_same_subjects_and_rows(shard_dir: Path, local_ray: None) -> None:
    arrays = decoded_arrays(shard_dir, "bp4d", 72)
    subjects = _training_subjects(shard_dir)
    job = StageJob(2, ("bp4d",), TRAIN, TEST)
    full = plan_stage(_cfg(shard_dir, 1.0), job, arrays)
    assert full.train[0].subjects is None  # every subject: no filter
    kept = {}
    for seed in (0, 1, 2):
        cfg = _cfg(shard_dir, 0.5, seed)
        cached, streamed = plan_stage(cfg, job, arrays), plan_stage(cfg, job)
        assert cached.train[0] == streamed.train[0] and cached.rows == streamed.rows
        assert cached.weights == streamed.weights
        kept[seed] = cached.train[0].subjects
        assert kept[seed] is not None and len(kept[seed]) == math.ceil(0.5 * len(subjects))
        assert set(kept[seed]) < set(subjects) and cached.rows < full.rows
    assert plan_stage(_cfg(shard_dir, 0.5, 1), job, arrays).train[0].subjects == kept[1]
    assert len(set(kept.values())) > 1
    # The rows each path delivers: only the kept subjects', and the same on both paths.
    split = plan_stage(_cfg(shard_dir, 0.5, 0), job).train[0]
    cached_rows = cached_split(arrays, split.parts, split.labels, subjects=split.subjects)
    stream = load_split(shard_dir, "bp4d", split.parts, split.labels, subjects=split.subjects)
    got = stream.take_all()
    assert {r["subject"] for r in got} == set(split.subjects or ())
    assert len(got) == len(cached_rows["au"]) == plan_stage(_cfg(shard_dir, 0.5, 0), job).rows
    # Class weights of the kept rows only.
    in_kept = np.isin(arrays["subject"], split.subjects or ()) & np.isin(arrays["part"], TRAIN)
    labelled = arrays["au"][in_kept & (arrays["au"] >= 0).any(1)]
    weights = plan_stage(_cfg(shard_dir, 0.5, 0), job, arrays).weights
    assert weights == pytest.approx(tuple(au_pos_weights(labelled).tolist()))
