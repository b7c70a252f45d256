"""The linear probes of frozen image features (`clef_core.training.probe`, `clef probe`): the
identity split holds out whole tasks of each person; each probe reports what its features
hold and no more (informative features beat the trivial answer, noise does not); the probes
read the right columns of a dataset's rows (a model whose features show who is pictured gives
a high identity accuracy); `clef probe` writes the JSON the issue asks for, with MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clef_core.method.config import load_config
from clef_core.training.probe import (
    identity_split,
    probe_aus,
    probe_classes,
    run_probes,
    sequence_sample,
)


def test_sequence_sample_spaces_frames_evenly_within_each_person_and_task() -> None:
    subjects = np.array(["F1"] * 24 + ["M2"] * 5)
    tasks = np.array(["T1"] * 24 + ["T1"] * 5)
    rows = sequence_sample(subjects, tasks, 12)
    first = rows[rows < 24]
    assert len(first) == 12 and first[0] == 0 and first[-1] == 23
    assert set(np.diff(first)) <= {2, 3}  # evenly spaced
    assert list(rows[rows >= 24]) == [24, 25, 26, 27, 28]  # fewer than 12: all of them
    assert len(sequence_sample(subjects, tasks, None)) == 29


def test_identity_split_holds_out_whole_tasks_of_each_person() -> None:
    subjects = np.array(["F1"] * 6 + ["M2"] * 4 + ["M3"] * 2)
    tasks = np.array(["T1", "T1", "T2", "T2", "T3", "T3", "T1", "T1", "T4", "T4", "T2", "T2"])
    fit, test = identity_split(subjects, tasks)
    assert not (fit & test).any()
    # F1: T1, T2 fit (first half of 3 tasks, rounded up), T3 tests; M2: T1 / T4; M3 has one
    # task, so neither.
    assert set(tasks[fit & (subjects == "F1")]) == {"T1", "T2"}
    assert set(tasks[test & (subjects == "F1")]) == {"T3"}
    assert set(tasks[test & (subjects == "M2")]) == {"T4"}
    assert not (fit | test)[subjects == "M3"].any()


def _aus(n: int, rng: np.random.Generator) -> np.ndarray:
    au = (rng.random((n, 4)) < [0.5, 0.3, 0.2, 0.1]).astype(np.int8)
    au[rng.random((n, 4)) < 0.05] = -1  # some uncoded labels: ignored, not counted
    return au


def test_probes_find_what_features_hold_and_nothing_in_noise() -> None:
    rng = np.random.default_rng(0)
    au_fit, au_test = _aus(600, rng), _aus(400, rng)
    informative = lambda au: au.clip(0) * 2.0 + rng.normal(0, 0.7, au.shape)  # noqa: E731
    good = probe_aus(informative(au_fit), au_fit, informative(au_test), au_test, (1, 2, 4, 6))
    noise = probe_aus(rng.normal(size=(600, 8)), au_fit, rng.normal(size=(400, 8)), au_test,
                      (1, 2, 4, 6))  # fmt: skip
    assert good["au_f1"] > good["au_f1_always"] + 0.3 and good["au_auc"] > 0.9
    assert abs(noise["au_auc"] - 0.5) < 0.1 and noise["au_f1"] < good["au_f1"] - 0.3
    assert good["au_f1_always"] == pytest.approx(noise["au_f1_always"])  # same test labels
    y_fit, y_test = rng.integers(0, 5, 500), rng.integers(0, 5, 300)
    one_hot = lambda y: np.eye(5)[y] + rng.normal(0, 0.3, (len(y), 5))  # noqa: E731
    acc, largest = probe_classes(one_hot(y_fit), y_fit, one_hot(y_test), y_test)
    assert acc > 0.95 and largest == pytest.approx(np.bincount(y_test).max() / 300)
    acc_noise, _ = probe_classes(
        rng.normal(size=(500, 5)), y_fit, rng.normal(size=(300, 5)), y_test
    )
    assert acc_noise < 0.35


def _people_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """6 people x 4 tasks x 6 frames: each person's frames share a pattern of their own (so
    who is pictured is plainly in the pixels), tasks and AUs are random: parts by person."""
    patterns = rng.integers(0, 255, (6, 4, 4, 3)).repeat(24, 1).repeat(24, 2)  # (6, 96, 96, 3)
    rows = [(p, t) for p in range(6) for t in range(4) for _ in range(6)]
    images = np.stack([patterns[p] for p, _ in rows]).astype(np.int16)
    images += rng.integers(-8, 9, images.shape)  # frame noise
    return {
        "image": images.clip(0, 255).astype(np.uint8),
        "au": _aus(len(rows), rng),
        "part": np.array([p % 3 for p, _ in rows], np.int8),
        "dataset": np.array(["bp4d"] * len(rows)),
        "task": np.array([f"T{t + 1}" for _, t in rows]),
        "subject": np.array([f"S{p}" for p, _ in rows]),
    }


def test_run_probes_reads_people_tasks_and_parts() -> None:
    from clef_core.method.model import build_model

    cfg = load_config("cpu-tiny", ["model.input_norm=clip"])  # colour patterns stay visible
    torch.manual_seed(0)
    arrays = _people_arrays(np.random.default_rng(1))
    r = run_probes(build_model(cfg.model), arrays, (1, 2, 4, 6), (1, 2), (0,), name="random")
    # training parts 1, 2: people 1, 2, 4, 5; each fits on T1, T2 and is tested on T3, T4
    assert r.frames["identity_fit"] == r.frames["identity_test"] == 4 * 2 * 6
    assert r.frames["activity_test"] == 2 * 4 * 6  # people 0 and 3 (part 0)
    assert r.identity_acc > 0.9 and r.identity_majority == pytest.approx(0.25)
    assert r.activity_majority == pytest.approx(0.25)  # tasks are balanced, and unrelated
    assert 0 <= r.au_f1 <= 1 and 0 <= r.au_auc <= 1


def test_the_activity_only_probe_reads_the_aus_an_activity_decides() -> None:
    """`au_f1_activity`: the AU probes on one-hot activity features. AUs each set by one task
    are read perfectly from the activity alone; random AUs are not."""
    from clef_core.method.model import build_model

    model = build_model(load_config("cpu-tiny").model)
    arrays = _people_arrays(np.random.default_rng(1))
    by_task = np.stack([arrays["task"] == t for t in ("T1", "T2", "T3", "T4")], 1)
    tied = run_probes(model, arrays | {"au": by_task.astype(np.int8)}, (1, 2, 4, 6), (1, 2), (0,))
    untied = run_probes(model, arrays, (1, 2, 4, 6), (1, 2), (0,))
    assert tied.au_f1_activity == pytest.approx(1.0)
    assert untied.au_f1_activity < 0.7 and tied.au_f1_always < 0.5


def test_probe_cache_key_follows_the_model_and_the_fold(shard_dir: Path, tmp_path: Path) -> None:
    from clef_core.training.probe_cache import probe_key

    cfg = load_config("cpu-tiny", [f"data.shards={shard_dir}", f"data.data_dir={tmp_path}"])
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.pt").write_bytes(b"weights one")
    first = probe_key(cfg, str(ckpt), "bp4d", 1)
    assert probe_key(cfg, str(ckpt), "bp4d", 1) == first
    assert probe_key(cfg, str(ckpt), "bp4d", 2) != first
    (ckpt / "model.pt").write_bytes(b"weights two")  # retrained in the same folder
    assert probe_key(cfg, str(ckpt), "bp4d", 1) != first
    reseeded = load_config("cpu-tiny", [f"data.shards={shard_dir}", "seed=1"])
    assert probe_key(cfg, "random", "bp4d", 1) != probe_key(reseeded, "random", "bp4d", 1)


@pytest.mark.slow
def test_clef_probe_writes_the_figures(
    shard_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    # A data dir named with a comment mark, a YAML mapping mark and spaces (issue #29): the
    # command's outputs land in it (its MLflow store and logs by default), not in a folder cut
    # at the '#'. The default store is asked for: no MLflow URI from the tests' environment
    # (or an earlier test's stack). The decoded cache goes beside the shards' real folder.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = tmp_path / "my runs #2: probe"
    data.mkdir()
    (data / "shards").symlink_to(shard_dir)
    out, store = tmp_path / "probe.json", f"sqlite:///{data / 'mlflow.db'}"
    result = CliRunner().invoke(app, ["probe", "--model", "random", "--dataset", "bp4d",
                                      "--fold", "1", "--data-dir", str(data), "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {"mlflow.db", "logs", "shards"} <= {p.name for p in data.iterdir()}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("my runs")] == [data.name]
    got = json.loads(out.read_text())
    for key in (
        "au_f1",
        "au_f1_always",
        "au_f1_activity",
        "au_auc",
        "activity_acc",
        "identity_acc",
    ):
        assert 0.0 <= got[key] <= 1.0, key
    assert got["frames"]["au_test"] > 0 and got["model"] == "random"
    files = tmp_path / "probe-files"
    assert {"probes.md", "probes.png", "probes.json"} <= {p.name for p in files.iterdir()}
    from mlflow import MlflowClient

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("clef-probe").experiment_id])
    logged = [r for r in runs if "au_f1" in r.data.metrics]
    assert logged and logged[0].data.metrics["au_f1"] == pytest.approx(got["au_f1"])

    # A rerun reuses the cached probe (issue #30: the demo's second run): a mark written into
    # the cache comes back, so nothing was fitted again.
    (cached,) = (data / "runs" / "probes").glob("*.json")
    mark = {**json.loads(cached.read_text()), "au_f1": 0.123456}
    cached.write_text(json.dumps(mark))
    again = tmp_path / "again.json"
    result = CliRunner().invoke(app, ["probe", "--model", "random", "--dataset", "bp4d",
                                      "--fold", "1", "--data-dir", str(data), "--out", str(again)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(again.read_text())["au_f1"] == 0.123456
