"""Zero-shot experiments on the session's synthetic shards, a few steps each: both experiments
on RAF-DB and FERPlus, rows CLEF (stage 1 first) and FaRL (none), two seeds; both scorings
(unseen classes only, every class) on constructed scores where they differ; the MLflow runs,
the report's table with the poster's figures; one-line errors, from the library and the CLI.
What the tiny model reaches here is not asserted (a few steps from scratch); what is
trained, from what, scored on which frames among which classes, is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from clef_core.common.errors import ClefError
from clef_core.method.config import load_config

SHORT = ["stage1.steps_per_epoch=2", "stage1.batch_size=16", "stage2.steps_per_epoch=3",
         "stage2.batch_size=16"]  # fmt: skip
SEEN = ["happiness", "sadness", "surprise", "anger"]


@pytest.fixture(scope="module")
def data_dir(shard_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("zeroshot")
    (data / "shards").symlink_to(shard_dir)
    return data


def _test_labels(shard_dir: Path, dataset: str) -> tuple[list[str], np.ndarray]:
    classes = json.loads((shard_dir / dataset / "manifest.json").read_text())["classes"]
    files = sorted((shard_dir / dataset).glob("*.parquet"))
    rows = pq.ParquetDataset(files).read(columns=["expression", "part"]).to_pandas()
    return classes, rows.expression[(rows.part == 1) & (rows.expression >= 0)].to_numpy()


def test_the_two_scorings_differ_where_a_seen_class_wins() -> None:
    from clef_core.training.zeroshot import score_both

    # 4 classes; 0 and 1 seen, 2 and 3 unseen. Frames of class 2, 3, 2, 3.
    scores = np.array([
        [0.70, 0.00, 0.20, 0.10],  # seen 0 wins overall; among unseen, 2: right (unseen only)
        [0.10, 0.60, 0.10, 0.20],  # seen 1 wins overall; among unseen, 3: right (unseen only)
        [0.00, 0.10, 0.80, 0.10],  # 2 wins both ways: right
        [0.10, 0.00, 0.60, 0.30],  # 2 wins both ways: wrong
    ])  # fmt: skip
    got = score_both(scores, np.array([2, 3, 2, 3]), [2, 3])
    assert got["accuracy_unseen"] == pytest.approx(3 / 4)
    assert got["accuracy_all"] == pytest.approx(1 / 4)
    assert got["chance_unseen"] == 0.5 and got["chance_all"] == 0.25
    assert got["largest_class"] == 0.5
    with pytest.raises(ClefError, match="every test frame must be of an unseen class"):
        score_both(scores, np.array([0, 3, 2, 3]), [2, 3])


@pytest.fixture(scope="module")
def results(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list, object]:
    import torch

    from clef_core.training.zeroshot import run_zeroshot, steps

    torch.set_num_threads(2)
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    cfg = load_config("cpu-tiny", [f"data.data_dir={data_dir}", f"tracking.mlflow_uri={uri}",
                                   *SHORT])  # fmt: skip
    calls: list[int] = []
    out = run_zeroshot(cfg, seen=SEEN, seeds=[0, 1], on_step=lambda s, _p: calls.append(s))
    # Per seed: stage 1 on BP4D+ (every part) and on BP4D fold 1, 2 steps each; six stage-2
    # trainings (2 rows x (2 datasets + the one AU training)) of 3 steps.
    assert len(calls) == steps(cfg, seeds=2) == 2 * (2 * 2 + 6 * 3)
    return out, cfg


def test_both_experiments_on_both_datasets_each_row_and_seed(data_dir: Path, results) -> None:
    out, _cfg = results
    keys = [(r.experiment, r.dataset, r.row, r.seed) for r in out]
    assert len(out) == len(set(keys)) == 2 * 2 * 2 * 2  # experiments, datasets, rows, seeds
    for r in out:
        classes, test = _test_labels(data_dir / "shards", r.dataset)
        unseen = [c for c in classes if c not in SEEN]
        if r.experiment.startswith("expressions"):
            assert r.tested_on == f"{r.dataset}: {', '.join(unseen)}"
            assert r.frames == np.isin(test, [classes.index(c) for c in unseen]).sum() > 0
            assert r.chance_unseen == pytest.approx(1 / len(unseen))
        else:
            assert r.frames == len(test) and r.trained_on == "bp4d fold 1: 12 AUs"
            assert r.accuracy_unseen == r.accuracy_all  # every class unseen: one scoring
        assert r.chance_all == pytest.approx(1 / len(classes))
        assert 0 <= min(r.accuracy_unseen, r.accuracy_all) <= 1 and r.largest_class >= r.chance_all
        clef_start = "stage 1 on bp4d (fold 1)" if r.trained_on.startswith("bp4d") else (
            "stage 1 on bp4d_plus (every part)")  # fmt: skip
        assert r.start == (clef_start if r.row == "CLEF" else "no stage 1: from scratch")
    # Stage 1 and the seed change the model, so its scores: an AUC over a few test frames
    # may tie by chance, all sixteen cannot.
    auc = {k: (r.auc_unseen, r.auc_all) for k, r in zip(keys, out, strict=True)}
    assert any(auc[(e, d, "CLEF", s)] != auc[(e, d, "FaRL", s)] for e, d, _r, s in keys)
    assert any(auc[(e, d, row, 0)] != auc[(e, d, row, 1)] for e, d, row, _s in keys)


def test_results_are_recorded_one_run_each_and_reported_beside_the_poster(
    results, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from clef_core.tracking.report import write_report
    from clef_core.tracking.zeroshot_report import mean_sd, record_zeroshot
    from flows.train import run_book

    out, cfg = results
    md = record_zeroshot(run_book(cfg, "zs-test"), out, tmp_path / "out")
    client = MlflowClient(cfg.tracking.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("clef-zeroshot").experiment_id])
    logged = {r.info.run_name: r.data.metrics for r in runs if "clef.zeroshot" in r.data.tags}
    assert len(logged) == len(out)
    r = out[0]
    metrics = logged[f"{r.experiment} | {r.dataset} | {r.row} | seed {r.seed}"]
    assert metrics["accuracy_unseen"] == pytest.approx(r.accuracy_unseen)
    assert metrics["accuracy_all"] == pytest.approx(r.accuracy_all)
    assert metrics["frames"] == r.frames
    report = write_report({}, tmp_path / "report", True, [x.as_dict() for x in out])
    au = [x for x in out if x.experiment == "AUs -> expressions" and x.dataset == "ferplus"
          and x.row == "CLEF"]  # fmt: skip
    seen = [x for x in out if x.experiment.startswith("expressions") and x.dataset == "rafdb"
            and x.row == "FaRL"]  # fmt: skip
    for text in (md.read_text(), report.read_text()):
        cell = mean_sd([x.accuracy_all for x in au])
        assert f"| AUs -> expressions | ferplus | CLEF | all (= unseen) | {cell} |" in text
        assert cell.endswith("(2)") and "± " in cell and "| 24.90 |" in text
        row = f"| expressions: seen -> unseen | rafdb | FaRL | all | {mean_sd([x.accuracy_all for x in seen])} |"
        assert row in text and text.count("| 16.21 |") == 2  # unseen and all
        assert "the CLEF poster (ICCV 2023)" in text


def test_mean_and_sd_over_seeds_and_an_earlier_result() -> None:
    from clef_core.tracking.zeroshot_report import mean_sd, zeroshot_table

    assert mean_sd([0.2, 0.3, 0.4]) == "30.0 ± 10.0 (3)" and mean_sd([0.25]) == "25.0 (1)"
    earlier = {"experiment": "AUs -> expressions", "trained_on": "bp4d fold 1: 12 AUs",
               "tested_on": "rafdb: neutral", "frames": 140, "accuracy": 0.15, "chance": 1 / 7,
               "largest_class": 0.279, "auc_macro": 0.45}  # fmt: skip
    text = "\n".join(zeroshot_table([earlier]))
    assert "| AUs -> expressions | rafdb | FaRL | unseen | 15.0 (1) | 14.3 | 27.9 | 0.45 |" in text


@pytest.mark.parametrize(
    ("overrides", "kwargs", "message"),
    [
        ([], {"seen": ["happiness", "joy"]}, "seen classes must be 2 or more"),
        ([], {"seen": ["happiness"]}, "seen classes must be 2 or more"),
        (["stage2.head=linear"], {}, "needs stage2.head=names"),
        ([], {"datasets": ["bp4d"]}, "datasets must be FER datasets"),
        ([], {"rows": ["CLIP"]}, "rows must be among CLEF, FaRL"),
        (["stage1.epochs=0"], {}, "stage1.epochs must be 1 or more"),
    ],
)
def test_a_bad_zero_shot_setting_fails_with_one_message(
    data_dir: Path, overrides: list[str], kwargs: dict, message: str
) -> None:
    from clef_core.training.zeroshot import run_zeroshot

    cfg = load_config("cpu-tiny", [f"data.data_dir={data_dir}", *overrides])
    with pytest.raises(ClefError, match=message):
        run_zeroshot(cfg, **kwargs)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--rows", "CLIP"], "rows must be among"), (["--seeds", "0,x"], "--seeds: expected")],
)
def test_the_cli_rejects_bad_options_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    clef = str(Path(sys.executable).with_name("clef"))
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    out = subprocess.run([clef, "zeroshot", *args, "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and message in lines[0], out.stderr
