"""Process set-up helpers (`clef_core.common.runtime`): Ray Data's datasource switch is read
one way, as Ray reads it, by the driver's start and by each data plan; the default MLflow store
is the one data dir's that a caller names, written in one place."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from clef_core.common.runtime import datasource_v2, default_tracking_uri

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("value", "v2"),
    [(None, False), ("0", False), ("false", False), ("False", False), ("no", False),
     ("1", True), ("true", True), ("TRUE", True), (" 1\n", True)],
)  # fmt: skip
def test_datasource_v2_reads_the_variable_as_ray_does(
    monkeypatch: pytest.MonkeyPatch, value: str | None, v2: bool
) -> None:
    if value is None:
        monkeypatch.delenv("RAY_DATA_USE_DATASOURCE_V2", raising=False)
    else:
        monkeypatch.setenv("RAY_DATA_USE_DATASOURCE_V2", value)
    assert datasource_v2() is v2


def test_the_default_store_is_each_callers_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two data dirs in one process: each gets its own store (the first does not win), and
    no other module writes the default's file name (one copy of the default)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, second = default_tracking_uri(tmp_path / "a"), default_tracking_uri(tmp_path / "b")
    assert (first, second) == (
        f"sqlite:///{tmp_path}/a/mlflow.db",
        f"sqlite:///{tmp_path}/b/mlflow.db",
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri(tmp_path / "a") == "http://127.0.0.1:5000"
    spelled = set()
    for package in ("clef_core", "preprocessing", "flows", "bench"):
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}  # docstrings
            for node in ast.walk(tree):
                text = node.value if isinstance(node, ast.Constant) else None
                if isinstance(text, str) and "mlflow.db" in text and id(node) not in prose:
                    spelled.add(path.relative_to(REPO).as_posix())
    assert sorted(spelled) == ["clef_core/common/runtime.py"]


def test_a_local_instance_gets_the_single_node_train_settings_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Ray instances we start ourselves: no preemption watcher, a 0.5 s health check; a
    user's own value wins. (The stack's head: `flows.stack._base_env`, the same dict.)"""
    from ray._private import ray_constants

    from clef_core.common.runtime import LOOPBACK_RAY_ENV, _confine_to_loopback
    from flows.stack import _base_env

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
    for key in LOOPBACK_RAY_ENV:  # restored after the test
        monkeypatch.setenv(key, "")
    # Set first, so that monkeypatch restores (or removes) what `_confine_to_loopback` writes.
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "")
    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3")
    _confine_to_loopback()
    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3"
    head = _base_env(Path("/nonexistent"))
    assert head["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3"
    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")
    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")
    head = _base_env(Path("/nonexistent"))
    assert head["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    assert head["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.5"
