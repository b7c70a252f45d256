"""Both stages on Ray Train with 2 CPU workers on the synthetic shards (cpu-tiny, a few steps):
checkpoints are reported, stage 2 starts from stage 1 and is evaluated on the held-out part,
and rank 0 logs every epoch to MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from clef_core.checkpoint import read_meta
from clef_core.config import load_config
from clef_core.ray_train import StageJob, run_stage

pytestmark = pytest.mark.slow


def test_two_stages_on_two_workers(shard_dir: Path, tmp_path: Path, local_ray: None) -> None:
    cfg = load_config(
        "cpu-tiny",
        [
            f"data.data_dir={shard_dir.parent}",
            "stage1.epochs=2",
            "stage1.steps_per_epoch=2",
            "stage2.epochs=1",
            "stage2.steps_per_epoch=2",
            "stage1.batch_size=16",
            "stage2.batch_size=16",
        ],
    )
    cfg = cfg.model_copy(
        update={"data": cfg.data.model_copy(update={"data_dir": shard_dir.parent})}
    )
    assert cfg.data.shard_dir == shard_dir or (shard_dir.parent / "shards") == shard_dir
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    run = mlflow.MlflowClient(uri).create_run(mlflow.MlflowClient(uri).create_experiment("smoke"))
    s1 = run_stage(
        cfg, StageJob(1, ("bp4d",), (1, 2), name="s1"), tmp_path / "runs", uri, run.info.run_id
    )
    assert read_meta(s1.checkpoint)["epoch"] == 1 and s1.metrics["train_loss"] > 0
    s2 = run_stage(
        cfg,
        StageJob(2, ("bp4d",), (1, 2), (0,), init_from=str(s1.checkpoint), name="s2"),
        tmp_path / "runs",
    )
    assert read_meta(s2.checkpoint)["labels"] == [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]
    assert 0.0 <= s2.metrics["f1_mean"] <= 1.0 and "f1_au12" in s2.metrics
    history = mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [0, 1]  # one point per epoch, from rank 0 only
