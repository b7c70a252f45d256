"""Failure semantics of Ray Train runs: a training worker process killed mid-run (SIGKILL,
after the first epoch's checkpoint) is restarted by Ray Train, every worker resumes from the
last reported checkpoint, and the run ends with the right epoch and step counts (2 epochs of 8 steps here)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from clef_core.method.checkpoint import read_meta
from clef_core.method.config import load_config
from clef_core.training.ray_train import StageJob, StageResult, run_stage
from tests.ray_state import gone, train_workers

pytestmark = pytest.mark.slow

EPOCHS, STEPS = 2, 8


def test_killed_worker_resumes_from_last_checkpoint(
    shard_dir: Path, tmp_path: Path, local_ray: None
) -> None:
    cfg = load_config(
        "cpu-tiny",
        [
            f"data.data_dir={shard_dir.parent}",
            f"stage1.epochs={EPOCHS}",
            f"stage1.steps_per_epoch={STEPS}",
            "stage1.batch_size=8",
            "compute.max_failures=2",
        ],
    )
    storage = tmp_path / "ray"
    out: dict[str, StageResult | BaseException] = {}

    def fit() -> None:
        try:
            out["result"] = run_stage(cfg, StageJob(1, ("bp4d",), (1, 2), name="kill"), storage)
        except BaseException as err:
            out["result"] = err

    thread = threading.Thread(target=fit)
    thread.start()
    deadline = time.monotonic() + 300
    while not list(storage.glob("kill/checkpoint_*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(storage.glob("kill/checkpoint_*")), "no checkpoint was reported in time"
    victims = [a["Pid"] for a in train_workers(alive_only=True)]  # this instance's only
    assert victims, "no Ray Train worker process found"
    victim = victims[0]
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=420)
    assert not thread.is_alive()
    result = out["result"]
    assert isinstance(result, StageResult), f"the run did not survive the kill: {result!r}"
    meta = read_meta(result.checkpoint)
    assert meta["epoch"] == EPOCHS - 1  # the killed run resumed after epoch 0
    assert meta["step"] == EPOCHS * STEPS  # resumed at the right step, none repeated or lost
    assert gone(victim)
    assert result.metrics["epoch"] == EPOCHS - 1
