"""Zero-shot experiments on the session's synthetic shards, a few steps each: a model trained
on some RAF-DB expressions scores the others by their names; a BP4D AU model scores RAF-DB's
expressions; both recorded in MLflow and shown in the report. What the tiny model reaches
here is not asserted (a few steps from scratch); what is scored, on which frames, is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from clef_core.common.errors import ClefError
from clef_core.method.config import load_config

SHORT = ["stage2.steps_per_epoch=6", "stage2.batch_size=16"]


@pytest.fixture(scope="module")
def data_dir(shard_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("zeroshot")
    (data / "shards").symlink_to(shard_dir)
    return data


def _test_labels(shard_dir: Path, dataset: str) -> tuple[list[str], np.ndarray]:
    import json

    classes = json.loads((shard_dir / dataset / "manifest.json").read_text())["classes"]
    files = sorted((shard_dir / dataset).glob("*.parquet"))
    rows = pq.ParquetDataset(files).read(columns=["expression", "part"]).to_pandas()
    return classes, rows.expression[(rows.part == 1) & (rows.expression >= 0)].to_numpy()


def test_unseen_expressions_and_aus_to_expressions_are_scored_recorded_and_reported(
    data_dir: Path, tmp_path: Path
) -> None:
    import torch
    from mlflow import MlflowClient

    from clef_core.tracking.report import write_report
    from clef_core.training.zeroshot import run_zeroshot
    from flows.clef_flow import record_zeroshot
    from flows.train import run_book

    torch.set_num_threads(2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("cpu-tiny", [f"data.data_dir={data_dir}", f"tracking.mlflow_uri={uri}",
                                   *SHORT])  # fmt: skip
    unseen, au = run_zeroshot(cfg, seen=["happiness", "sadness", "surprise", "anger"])
    classes, test = _test_labels(data_dir / "shards", "rafdb")
    held_back = [c for c in classes if c not in ("happiness", "sadness", "surprise", "anger")]
    assert unseen.tested_on == f"rafdb: {', '.join(held_back)}"
    assert unseen.frames == np.isin(test, [classes.index(c) for c in held_back]).sum() > 0
    assert unseen.chance == pytest.approx(1 / len(held_back))
    assert au.frames == len(test) and au.chance == pytest.approx(1 / len(classes))
    assert au.trained_on == "bp4d fold 1: 12 AUs"
    for r in (unseen, au):
        assert 0 <= r.accuracy <= 1 and r.largest_class >= r.chance
    md = record_zeroshot(run_book(cfg, "zs-test"), [unseen, au], tmp_path / "out")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("clef-zeroshot").experiment_id])
    logged = {r.info.run_name: r.data.metrics for r in runs if "clef.zeroshot" in r.data.tags}
    assert logged["AUs -> expressions"]["accuracy"] == pytest.approx(au.accuracy)
    assert logged["expressions: seen -> unseen"]["frames"] == unseen.frames
    report = write_report({}, tmp_path / "report", True, [unseen.as_dict(), au.as_dict()])
    for text in (md.read_text(), report.read_text()):
        assert f"| AUs -> expressions | {au.frames} | {100 * au.accuracy:.1f} |" in text


@pytest.mark.parametrize(
    ("overrides", "seen", "message"),
    [
        ([], ["happiness", "joy"], "seen classes must be 2 or more"),
        ([], ["happiness"], "seen classes must be 2 or more"),
        (["stage2.head=linear"], None, "needs stage2.head=names"),
    ],
)
def test_a_bad_zero_shot_setting_fails_with_one_message(
    data_dir: Path, overrides: list[str], seen: list[str] | None, message: str
) -> None:
    from clef_core.training.zeroshot import unseen_expressions

    cfg = load_config("cpu-tiny", [f"data.data_dir={data_dir}", *overrides])
    with pytest.raises(ClefError, match=message):
        unseen_expressions(cfg, "rafdb", seen)
