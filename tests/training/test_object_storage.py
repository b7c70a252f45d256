"""Shards and results at `s3://` URIs (`data.shards`, `data.storage`), against a real
S3-compatible server (moto's server mode on 127.0.0.1, one per module, `tests.s3server`):

a stage-1 unit streams its shards from the bucket (Ray Data), Ray Train keeps its checkpoints
there; a training worker killed after the first epoch's checkpoint is restarted and resumes
from that checkpoint, read back from the bucket; the unit's result goes to the bucket. A
stage-2 unit then starts from that checkpoint (each worker reads it from the bucket) and
trains from the decoded cache, which is kept in the bucket too. A second machine (an empty
local data dir) reuses both units from the bucket: checkpoints and held-out predictions
copied back whole, same metrics, nothing trained again.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clef_core.common.results import UnitResult
from clef_core.common.storage import location, upload_shards
from clef_core.method.checkpoint import checkpoint_problem, read_meta
from clef_core.method.config import ExperimentConfig, load_config
from clef_core.run.unit import run_unit
from clef_core.training.protocol import Unit, stage2_unit
from clef_core.training.unit_cache import key_of, stored_unit_dir
from tests.ray_state import gone, train_workers
from tests.s3server import BUCKET, s3_server

pytestmark = [pytest.mark.slow, pytest.mark.server]

EPOCHS, STEPS = 2, 3
SHARDS, STORE = f"s3://{BUCKET}/clef/shards", f"s3://{BUCKET}/clef/store"


@pytest.fixture(scope="module")
def s3(shard_dir: Path) -> Iterator[str]:
    """The server, with the session's BP4D shards uploaded (before Ray starts: its workers
    inherit the server's address from the environment)."""
    with s3_server() as endpoint:
        upload_shards(shard_dir / "bp4d", location(SHARDS) / "bp4d")
        yield endpoint


def _cfg(data_dir: Path, cache: bool) -> ExperimentConfig:
    return load_config(
        "cpu-tiny",
        [
            f"data.data_dir={data_dir}", f"data.shards={SHARDS}", f"data.storage={STORE}",
            f"stage1.epochs={EPOCHS}", f"stage1.steps_per_epoch={STEPS}", "stage1.batch_size=8",
            "stage2.epochs=1", f"stage2.steps_per_epoch={STEPS}", "stage2.batch_size=8",
            "compute.max_failures=2", f"compute.cache_decoded={str(cache).lower()}",
        ],
    )  # fmt: skip


def test_units_train_from_and_to_object_storage(s3: str, tmp_path: Path, local_ray: None) -> None:
    here = tmp_path / "machine-1"
    streamed, cached = _cfg(here, cache=False), _cfg(here, cache=True)
    s1_unit, s2_unit = Unit(1, "bp4d", 1), stage2_unit("bp4d", 1, pretrain=True)
    assert s2_unit.init == s1_unit
    checkpoints = location(STORE) / "ray_results" / f"{s1_unit.name}-{key_of(streamed, s1_unit)}"
    out: dict[str, UnitResult | BaseException] = {}

    def train() -> None:
        try:
            out["s1"] = run_unit(streamed, s1_unit, None)
        except BaseException as err:
            out["s1"] = err

    thread = threading.Thread(target=train)
    thread.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and thread.is_alive():
        if any(f.startswith("checkpoint_") for f in checkpoints.files()):
            break
        time.sleep(0.2)
    assert any(f.startswith("checkpoint_") for f in checkpoints.files()), f"none in S3: {out}"
    victims = [a["Pid"] for a in train_workers(alive_only=True)]  # this instance's only
    assert victims, "no Ray Train worker process found"
    os.kill(victims[0], signal.SIGKILL)
    thread.join(timeout=420)
    s1 = out["s1"]
    assert isinstance(s1, UnitResult), f"the run did not survive the kill: {s1!r}"
    assert gone(victims[0])
    meta = read_meta(Path(s1.checkpoint))
    # Resumed after epoch 0 from the checkpoint in S3: no step repeated or lost.
    assert (meta["epoch"], meta["step"]) == (EPOCHS - 1, EPOCHS * STEPS)
    assert not (here / "ray_results").exists()  # Ray Train wrote to the bucket only
    stored = stored_unit_dir(streamed, s1_unit, s1.key)
    assert stored is not None
    assert {"result.json", "checkpoint/model.pt", "checkpoint/meta.json"} <= set(stored.files())

    s2 = run_unit(cached, s2_unit, None, init=s1)
    assert not s2.cached and s2.metrics["f1_mean"] >= 0
    assert any(f.endswith(".npz") for f in (location(SHARDS).parent / "cache").files())
    stored2 = stored_unit_dir(cached, s2_unit, s2.key)
    assert stored2 is not None and "predictions.parquet" in stored2.files()

    # Another machine: an empty data dir, the same bucket.
    there = tmp_path / "machine-2"
    again1 = run_unit(_cfg(there, cache=True), s1_unit, None)
    again2 = run_unit(_cfg(there, cache=True), s2_unit, None, init=again1)
    for first, again in ((s1, again1), (s2, again2)):
        assert again.cached and again.key == first.key and again.metrics == first.metrics
        assert Path(again.checkpoint).is_relative_to(there)
        assert checkpoint_problem(Path(again.checkpoint)) is None
    assert (Path(again2.checkpoint).parent / "predictions.parquet").is_file()
    assert read_meta(Path(again1.checkpoint))["step"] == EPOCHS * STEPS
