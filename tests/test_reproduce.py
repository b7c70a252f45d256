"""`clef reproduce` (the `clef` Prefect flow, in-process) end to end on the synthetic BP4D
fold 1: killed in the middle of fine-tuning and run again, it completes without redoing
preprocessing or pre-training; run a third time, every unit comes from the cache. MLflow holds
the parent run with the fold mean and the nested stage runs with per-AU F1 and plots, and the
report (markdown + HTML) is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.slow

SMALL = [
    "--set", "stage1.epochs=1", "--set", "stage1.steps_per_epoch=3",
    "--set", "stage2.epochs=2", "--set", "stage2.steps_per_epoch=3",
    "--set", "stage1.batch_size=16", "--set", "stage2.batch_size=16",
]  # fmt: skip


def _reproduce(data_dir: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "flows.cli", "reproduce", "--dataset", "bp4d", "--fold", "1",
           "--data-dir", str(data_dir), *SMALL]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_HOME")}
    log = (data_dir.parent / f"reproduce-{time.time():.0f}.log").open("w")
    return subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def test_killed_reproduction_resumes_and_a_rerun_is_cached(
    synth_root: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(synth_root, data / "synthetic")  # the session's synthetic data, as the demo's
    runs = data / "runs"

    first = _reproduce(data)
    started_s2 = _wait_for(lambda: any((data / "ray_results").glob("s2-bp4d-fold1-*")), 600)
    os.killpg(first.pid, signal.SIGKILL)  # the flow, its Ray instance, everything
    first.wait()
    assert started_s2, "fine-tuning never started"
    s1 = next(runs.glob("s1-bp4d-fold1-*/result.json"))
    s1_mtime = s1.stat().st_mtime
    shard = next((data / "shards" / "bp4d").glob("*.parquet"))
    shard_mtime = shard.stat().st_mtime
    assert not list(runs.glob("s2-bp4d-fold1-*/result.json"))

    second = _reproduce(data)
    assert second.wait(timeout=600) == 0
    assert s1.stat().st_mtime == s1_mtime  # pre-training was not redone
    assert shard.stat().st_mtime == shard_mtime  # nor was preprocessing
    s2 = next(runs.glob("s2-bp4d-fold1-*/result.json"))
    s2_mtime = s2.stat().st_mtime

    start = time.monotonic()
    third = _reproduce(data)
    assert third.wait(timeout=600) == 0
    rerun_seconds = time.monotonic() - start
    assert s2.stat().st_mtime == s2_mtime  # nothing retrained

    reports = data / "reports"
    latest = reports / (reports / "latest").read_text()
    assert "bp4d: AU detection" in (latest / "report.md").read_text()
    html = (latest / "report.html").read_text()
    assert "SYNTHETIC DATA" in html and html.count("data:image/png;base64") >= 2

    client = mlflow.MlflowClient(f"sqlite:///{data / 'mlflow.db'}")
    exp = client.get_experiment_by_name("clef-bp4d")
    assert exp is not None
    parents = client.search_runs([exp.experiment_id], "tags.`clef.parent` = '1'")
    assert len(parents) == 3  # one per reproduction, the killed one included
    done = [p for p in parents if "f1_mean" in p.data.metrics]
    assert len(done) == 2  # the two that completed report the fold mean
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{done[0].info.run_id}'"
    )
    s2_runs = [c for c in children if c.data.tags["clef.unit"] == "s2-bp4d-fold1"]
    assert s2_runs and "f1_au12" in s2_runs[0].data.metrics
    trained = [
        c
        for c in client.search_runs([exp.experiment_id])
        if c.data.tags.get("clef.unit") == "s2-bp4d-fold1"
        and "clef.cached_from" not in c.data.tags
        and "f1_mean" in c.data.metrics  # the killed attempt's run has no final metrics
    ]
    assert len(trained) == 1, "stage 2 should have been trained to the end exactly once"
    # One point per epoch (stage 2 runs 2 here): rank 0 logs, the other worker does not.
    history = client.get_metric_history(trained[0].info.run_id, "train_loss")
    assert sorted(m.step for m in history) == [0, 1]
    arts = {a.path for a in client.list_artifacts(trained[0].info.run_id, "plots")}
    assert {"plots/f1_per_au.png", "plots/tsne.png"} <= arts
    versions = client.search_model_versions("name = 'clef-bp4d'")
    assert versions, "the stage-2 model was not registered"
    assert rerun_seconds < 120, f"a rerun with nothing changed took {rerun_seconds:.0f} s"
