"""Experiment tracking: MLflow on rank 0, a null tracker everywhere else (and in unit tests),
so training code has no `if mlflow:` branches."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...


class NullTracker:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass


class MlflowTracker:
    """Logs into an existing run (created by the driver), from any process."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        from mlflow import MlflowClient

        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()]
        )

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)


def tracker_for(rank: int, tracking_uri: str | None, run_id: str | None) -> Tracker:
    if rank != 0 or not tracking_uri or not run_id:
        return NullTracker()
    return MlflowTracker(tracking_uri, run_id)


# MLflow 3's UI opens an experiment without a kind on its GenAI overview ("Traces 0", "No data
# available"): this kind opens it on its training runs (the values of `mlflow.experimentKind`
# the 3.17 UI knows: genai_development, custom_model_development, ...).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


class RunBook:
    """The MLflow layout (DESIGN.md): one experiment per dataset protocol
    (`<prefix>-<dataset>`), one parent run per reproduction in each, and a nested run per
    stage / dataset / fold under it. Driver side only; thread-safe (flow tasks run in threads).
    """

    def __init__(self, tracking_uri: str, prefix: str, reproduction: str) -> None:
        import threading

        from mlflow import MlflowClient

        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.prefix = prefix
        self.reproduction = reproduction
        self.params: dict[str, Any] = {}  # logged on every parent run
        self._parents: dict[str, str] = {}
        self._lock = threading.Lock()

    def _artifact_location(self, name: str) -> str | None:
        """Beside a SQLite store (MLflow's default, ./mlruns, moves with the working
        directory); a tracking server decides for itself."""
        if not self.uri.startswith("sqlite:///"):
            return None
        return (Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts" / name).as_uri()

    def experiment_id(self, dataset: str) -> str:
        name = f"{self.prefix}-{dataset}"
        exp = self.client.get_experiment_by_name(name)
        if exp:
            if EXPERIMENT_KIND[0] not in exp.tags:  # made before the tag was set
                self.client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
            return str(exp.experiment_id)
        tags = dict([EXPERIMENT_KIND])
        return str(self.client.create_experiment(name, self._artifact_location(name), tags))

    def parent(self, dataset: str) -> str:
        """The reproduction's parent run in the dataset's experiment (created once)."""
        with self._lock:
            if dataset in self._parents:
                return self._parents[dataset]
            exp = self.experiment_id(dataset)
            query = f"tags.`clef.reproduction` = '{self.reproduction}' and tags.`clef.parent` = '1'"
            found = self.client.search_runs([exp], query)
            if found:
                run_id = str(found[0].info.run_id)
            else:
                run = self.client.create_run(
                    exp,
                    run_name=f"reproduction-{self.reproduction}",
                    tags={"clef.reproduction": self.reproduction, "clef.parent": "1"},
                )
                run_id = str(run.info.run_id)
                MlflowTracker(self.uri, run_id).log_params(self.params)
            self._parents[dataset] = run_id
            return run_id

    def parents(self) -> dict[str, str]:
        return dict(self._parents)

    def child(self, dataset: str, name: str, tags: dict[str, str]) -> str:
        parent = self.parent(dataset)
        run = self.client.create_run(
            self.experiment_id(dataset),
            run_name=name,
            tags={"mlflow.parentRunId": parent, "clef.reproduction": self.reproduction, **tags},
        )
        return str(run.info.run_id)

    def tracker(self, run_id: str) -> MlflowTracker:
        return MlflowTracker(self.uri, run_id)

    def finish(self, run_id: str, ok: bool = True) -> None:
        self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")

    def close(self, ok: bool = True) -> None:
        """End every parent run this book opened."""
        for run_id in self._parents.values():
            self.finish(run_id, ok)

    def register(self, name: str, run_id: str, artifact_path: str) -> str:
        """Register a run's logged checkpoint folder as a new version of model `name`."""
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # already registered: add a version
            self.client.create_registered_model(name)
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"
        version = self.client.create_model_version(name, source, run_id=run_id)
        return str(version.version)
