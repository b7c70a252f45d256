"""Held-out predictions: a real stage-2 unit (Ray Train, MLflow SQLite store) writes
`predictions.parquet` (subject, task, frame, targets, scores) in its folder and logs it to
MLflow; F1, the always-present baseline and the AUCs recomputed from that file with
scikit-learn are the reported ones (result.json and MLflow), and the report built from it
fits 80 columns. The expression path (majority class from the training part, macro AUC) is
checked on the rafdb shards with given scores, without training."""

from __future__ import annotations

import io
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from clef_core.common.results import UnitResult
from clef_core.method.config import load_config
from clef_core.run.unit import run_unit
from clef_core.tracking.runbook import RunBook
from clef_core.training.heldout import read_predictions
from clef_core.training.protocol import stage2_unit


@pytest.fixture(scope="module")
def units(
    shard_dir: Path, tmp_path_factory: pytest.TempPathFactory, local_ray: None
) -> tuple[dict[str, UnitResult], str]:
    """bp4d fold 1, stage 2 only, a few steps, in a data dir of its own."""
    data = tmp_path_factory.mktemp("heldout")
    os.symlink(shard_dir, data / "shards")
    cfg = load_config(
        "cpu-tiny",
        [f"data.data_dir={data}", "stage1.epochs=0", "stage2.steps_per_epoch=4",
         "stage2.batch_size=16", "tracking.register_model=false"],
    )  # fmt: skip
    uri = f"sqlite:///{data / 'mlflow.db'}"
    book = RunBook(uri, "clef", "heldout-test")
    done = {"bp4d": run_unit(cfg, stage2_unit("bp4d", 1, pretrain=False), book)}
    book.close()
    return done, uri


def _shards(shard_dir: Path, dataset: str, columns: list[str]) -> pd.DataFrame:
    files = sorted((shard_dir / dataset).glob("*.parquet"))
    return pd.concat([pq.read_table(f, columns=columns).to_pandas() for f in files])


def _logged(uri: str, run_id: str | None) -> tuple[dict[str, float], list[str]]:
    client = mlflow.MlflowClient(uri)
    assert run_id is not None
    files = [f.path for f in client.list_artifacts(run_id, "predictions")]
    return dict(client.get_run(run_id).data.metrics), files


@pytest.mark.slow
def test_au_predictions_recompute_the_reported_metrics(
    units: tuple[dict[str, UnitResult], str], shard_dir: Path
) -> None:
    results, uri = units
    result = results["bp4d"]
    path = Path(result.checkpoint).parent / "predictions.parquet"
    table = pq.read_table(path).to_pandas()
    # One row per labelled held-out frame (part 0 = fold 1's test part), each once.
    shards = _shards(shard_dir, "bp4d", ["subject", "part", "au"])
    held_out = shards[(shards.part == 0) & shards.au.map(lambda a: any(v >= 0 for v in a))]
    assert len(table) == len(held_out)
    assert not table.duplicated(["subject", "task", "frame"]).any()
    assert set(table.subject) == set(held_out.subject)
    assert not set(table.subject) & set(shards[shards.part != 0].subject)
    _, space, _ = read_predictions(path)
    logged, files = _logged(uri, result.run_id)
    assert files == ["predictions/predictions.parquet"]
    f1s, aucs, bases = [], [], []
    for au in space.labels:
        target, score = table[f"target_au{au}"], table[f"score_au{au}"]
        known = target >= 0
        t, s = target[known].to_numpy() > 0, score[known].to_numpy()
        f1 = f1_score(t, s > 0.5, zero_division=np.nan)
        base = f1_score(t, np.ones_like(t))
        assert result.metrics[f"f1_baseline_au{au}"] == pytest.approx(base, abs=1e-6)
        if not np.isnan(f1):
            f1s.append(f1)
            bases.append(base)
            assert result.metrics[f"f1_au{au}"] == pytest.approx(f1, abs=1e-6)
        if t.all() or not t.any():  # one class: no AUC, and none reported
            assert f"auc_au{au}" not in result.metrics
        else:
            aucs.append(roc_auc_score(t, s))
            assert result.metrics[f"auc_au{au}"] == pytest.approx(aucs[-1], abs=1e-6)
    expected = {"f1_mean": np.mean(f1s), "f1_baseline_mean": np.mean(bases),
                "auc_mean": np.mean(aucs)}  # fmt: skip
    for key, value in expected.items():
        assert result.metrics[key] == pytest.approx(value, abs=1e-6)
        assert logged[key] == pytest.approx(value, abs=1e-6)  # MLflow has the same


def test_fer_predictions_recompute_accuracy_majority_and_auc(
    shard_dir: Path, tmp_path: Path
) -> None:
    from clef_core.run.evaluate import evaluate
    from clef_core.training.cache import row_key
    from clef_core.training.heldout import metrics_from
    from clef_core.training.protocol import Unit

    test = _shards(shard_dir, "rafdb", ["subject", "task", "frame", "part", "expression"])
    test = test[(test.part == 1) & (test.expression >= 0)].sample(frac=1.0, random_state=0)
    classes = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    rng = np.random.default_rng(0)
    target = test.expression.to_numpy()
    logits = rng.normal(size=(len(test), 7)) + 1.0 * np.eye(7)[target]
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    rows = np.array([row_key(*r) for r in zip(test.subject, test.task, test.frame, strict=True)])
    checkpoint = tmp_path / "checkpoint"
    save_checkpoint_meta(checkpoint, "fer", classes)
    np.savez(checkpoint / "predictions.npz", scores=scores, targets=target, rows=rows,
             features=np.zeros((0, 4)))  # fmt: skip
    path = tmp_path / "predictions.parquet"
    cfg = load_config("cpu-tiny", [f"data.shards={shard_dir}"])  # threshold 0.5
    unit = Unit(2, "rafdb", 1)  # trains on part 0, tests on part 1
    metrics = evaluate(cfg, checkpoint, unit, tmp_path, saved=True).metrics
    table = pq.read_table(path).to_pandas()
    _, _, info = read_predictions(path)
    assert len(table) == len(test) and not table.duplicated(["subject", "task", "frame"]).any()
    # Each row's scores are the ones predicted for that (subject, task, frame).
    by_frame = dict(zip(test.frame, scores[:, 3], strict=True))
    assert np.allclose(table.score_happiness, table.frame.map(by_frame), atol=1e-6)
    # The majority class is the training part's (part 0), never the held-out one's.
    train = _shards(shard_dir, "rafdb", ["part", "expression"])
    counts = train[(train.part == 0) & (train.expression >= 0)].expression.value_counts()
    assert info["majority_class"] == int(counts.sort_index().idxmax())
    assert info["majority_class_name"] == classes[info["majority_class"]]
    t = table.target.to_numpy()
    p = table[[f"score_{c}" for c in classes]].to_numpy()
    assert metrics["accuracy"] == pytest.approx(np.mean(p.argmax(1) == t))
    assert metrics["accuracy_baseline"] == pytest.approx(np.mean(t == info["majority_class"]))
    per_class = [roc_auc_score(t == c, p[:, c]) for c in sorted(set(t))]
    assert metrics["auc_macro"] == pytest.approx(np.mean(per_class), abs=1e-6)
    assert metrics_from(path) == metrics and info["ids"] is True
    # A data path that lost the row keys still yields every metric (ids empty), not a failure.
    np.savez(checkpoint / "predictions.npz", scores=scores, targets=target,
             features=np.zeros((0, 4)))  # fmt: skip
    assert evaluate(cfg, checkpoint, unit, tmp_path, saved=True).metrics == metrics
    assert read_predictions(path)[2]["ids"] is False


def save_checkpoint_meta(folder: Path, kind: str, labels: list) -> None:
    """A checkpoint's meta.json as far as held-out predictions read it."""
    import json

    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"label_kind": kind, "labels": labels}))


@pytest.mark.slow
def test_report_of_real_units_fits_80_columns(
    units: tuple[dict[str, UnitResult], str], tmp_path: Path
) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    from clef_core.tracking.report import write_report

    results, _ = units
    md = write_report({"PA+PI+N+D": list(results.values())}, tmp_path, synthetic=True)
    text = md.read_text()
    assert "always present" in text and "majority class" in text and "55.8" in text
    out = os.environ.get("CLEF_TEST_ARTIFACTS")
    if out:  # for a person to look at
        import shutil

        shutil.copytree(tmp_path, Path(out) / "heldout-report", dirs_exist_ok=True)
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(Markdown(text))
    rendered = console.export_text()
    assert "…" not in rendered and max(map(len, rendered.splitlines())) <= 80


def test_the_evaluation_step_writes_its_results_while_mlflow_is_down(
    shard_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The flow's evaluation step has training's outage tolerance: with no tracking server
    it scores the checkpoint afresh, writes metrics.json and predictions.parquet, warns in
    one line and returns the metrics (it used to fail creating its MLflow run)."""
    import json
    import logging

    import torch

    from clef_core.common.results import UnitResult
    from clef_core.method.checkpoint import save_checkpoint
    from clef_core.method.labels import shard_label_space
    from clef_core.method.model import build_model
    from clef_core.run.evaluate import evaluation_step
    from clef_core.training.protocol import Unit

    torch.manual_seed(0)
    cfg = load_config("cpu-tiny", [f"data.data_dir={shard_dir.parent}"])
    model = build_model(cfg.model, cfg.stage2.logit_scale_init, cfg.stage2.logit_scale_max)
    space = shard_label_space(cfg.data.shard_dir, "rafdb")
    checkpoint = save_checkpoint(tmp_path / "unit" / "checkpoint", model, cfg, 2, 1, 0, space)
    unit = Unit(2, "rafdb", 1)
    trained = UnitResult(unit.name, 2, "rafdb", 1, "key", str(checkpoint), {"accuracy": 0.5})
    book = RunBook("http://127.0.0.1:9", "clef", "outage", spool=tmp_path / "spool")  # no one
    caplog.set_level(logging.WARNING, logger="clef.tracking")
    scored = evaluation_step(cfg, unit, trained, book)
    out = tmp_path / "unit" / "evaluation"
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(
        {
            k: v
            for k, v in scored.metrics.items()
            if k in ("accuracy", "accuracy_baseline", "auc_macro")
        }
    )
    assert read_predictions(out / "predictions.parquet")[2]["test_parts"] == [1]
    assert any("could not make its run" in r.getMessage() for r in caplog.records)
