"""The MLflow layout (DESIGN.md, "Tracking layout"): one experiment per dataset protocol, one
parent run per reproduction, a nested run per stage / dataset / fold, and the model registry.

Every call goes through the spool (`clef_core.tracking.spool`), so a server that is down
never stops the work: `RunBook.open` gives the caller a `Run` to fill, or, when the server
cannot even make the run, a `NullRun` with the same methods that does nothing (the work goes
on without a run, said in one warning). `NullBook` is the book of a run that tracks nothing
(tests, `clef evaluate`): its runs are all `NullRun`s, so the code that fills a run has no
`if tracking:` branches.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from pathlib import Path
from typing import Any

from clef_core.tracking.spool import (
    SpoolTarget,
    SpoolTracker,
    default_spool,
    flush_spool,
    quick_http,
)

log = logging.getLogger("clef.tracking")


def create_store(tracking_uri: str) -> None:
    """Create a SQLite store's tables one process at a time (a lock file beside it). MLflow
    creates and migrates a new store's tables when a client first uses it, and two processes
    doing so at once (two `clef` runs started together on a new data dir) failed, one or
    both (`duplicate column name`, alembic's `expected to match one row`). A server's store
    is the server's business."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    from mlflow import MlflowClient

    path = Path(tracking_uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(f"{path.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when closed, or when the process dies
        MlflowClient(tracking_uri).search_experiments(max_results=1)


# MLflow 3's UI opens an experiment without a kind on its GenAI overview ("Traces 0", "No data
# available"): this kind opens it on its training runs (the values of `mlflow.experimentKind`
# the 3.17 UI knows: genai_development, custom_model_development, ...).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


class RunBook:
    """The MLflow layout (DESIGN.md): one experiment per dataset protocol
    (`<prefix>-<dataset>`), one parent run per reproduction in each, and a nested run per
    stage / dataset / fold under it. Driver side only; thread-safe (flow tasks run in threads).
    """

    def __init__(
        self, tracking_uri: str, prefix: str, reproduction: str, spool: Path | None = None
    ) -> None:
        from mlflow import MlflowClient

        quick_http()
        self.uri = tracking_uri
        create_store(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        self.prefix = prefix
        self.reproduction = reproduction
        self.spool = spool or default_spool(tracking_uri)
        self.params: dict[str, Any] = {}  # logged on every parent run
        self._parents: dict[str, str] = {}
        self._trackers: dict[str, SpoolTracker] = {}
        self._lock = threading.RLock()  # parent() holds it while it calls tracker()
        # What an earlier run could not send (the server was down then) goes now, beside
        # this run's work; a server still down just leaves it for the next time.
        threading.Thread(
            target=flush_spool, args=(self.spool,), kwargs={"quiet": True},
            name="spool-earlier", daemon=True,
        ).start()  # fmt: skip

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
        from mlflow.exceptions import MlflowException

        tags = dict([EXPERIMENT_KIND])
        try:
            return str(self.client.create_experiment(name, self._artifact_location(name), tags))
        except MlflowException as err:  # another run on the store made it since: use that one
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            log.debug("experiment %s made by another run meanwhile (%s)", name, err)
            return str(exp.experiment_id)

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
                self.tracker(run_id).log_params(self.params)
            self._parents[dataset] = run_id
            return run_id

    def parents(self) -> dict[str, str]:
        return dict(self._parents)

    def child(
        self, dataset: str, name: str, tags: dict[str, str], parent: str | None = None
    ) -> str:
        """A new run under `parent`, by default the reproduction's parent run (raises when the
        server does not answer; `open` does not)."""
        parent = parent or self.parent(dataset)
        run = self.client.create_run(
            self.experiment_id(dataset),
            run_name=name,
            tags={"mlflow.parentRunId": parent, "clef.reproduction": self.reproduction, **tags},
        )
        return str(run.info.run_id)

    def open(
        self, dataset: str, name: str, tags: dict[str, str], parent: str | None = None
    ) -> Run | NullRun:
        """A new run `name` nested under `parent` (default: the reproduction's parent run in
        the dataset's experiment), or a `NullRun` when the server cannot make one now: the
        work goes on without a run (its results do not need the server), said once here."""
        try:
            return Run(self, self.child(dataset, name, tags, parent))
        except Exception as err:  # the server is down: the work goes on without a run
            log.warning("%s: MLflow at %s could not make its run (%s); going on without one",
                        name, self.uri, str(err).splitlines()[0][:200])  # fmt: skip
            return NullRun()

    def run(self, run_id: str) -> Run:
        """An existing run of this book's (a parent run) to log into."""
        return Run(self, run_id)

    def tracker(self, run_id: str) -> SpoolTracker:
        """The run's tracker (one per run: its calls keep their order in one spool file)."""
        with self._lock:
            if run_id not in self._trackers:
                self._trackers[run_id] = SpoolTracker(self.uri, run_id, self.spool)
            return self._trackers[run_id]

    def finish(self, run_id: str, ok: bool = True, timeout: float = 2.0) -> None:
        """End the run (spooled like every call); then send what its workers left."""
        tracker = self.tracker(run_id)
        tracker.terminate(ok)
        with self._lock:
            self._trackers.pop(run_id, None)
        if not tracker.close(timeout):
            flush_spool(self.spool, run_id=run_id, quiet=True)

    def close(self, ok: bool = True, timeout: float = 10.0) -> dict[str, int]:
        """End every parent run this book opened and send what is spooled (for up to
        `timeout` s); returns the calls still not in MLflow, per run."""
        for run_id in list(self._parents.values()):
            self.tracker(run_id).terminate(ok)
        for tracker in list(self._trackers.values()):
            tracker.close(timeout)
        self._trackers.clear()
        return flush_spool(self.spool, quiet=True)

    def register(self, name: str, run_id: str, artifact_path: str, description: str = "") -> None:
        """Register a run's logged checkpoint folder as a new version of model `name` (the
        version lands in the run's tag `clef.model_version`), with `description`."""
        self.tracker(run_id).register(name, artifact_path, description)


class Run:
    """One MLflow run as the code that fills it sees it: each call is spooled (never waits
    for the server), in order, through the book's one tracker for the run."""

    def __init__(self, book: RunBook, run_id: str) -> None:
        self.book, self.run_id = book, run_id

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.book.tracker(self.run_id).log_metrics(metrics, step)

    def log_params(self, params: dict[str, Any]) -> None:
        self.book.tracker(self.run_id).log_params(params)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.book.tracker(self.run_id).log_artifact(path, artifact_path)

    def register(self, name: str, artifact_path: str, description: str = "") -> None:
        self.book.register(name, self.run_id, artifact_path, description)

    def workers(self, spool: Path) -> SpoolTarget:
        """What Ray workers log this run's metrics through, each in its own file in `spool`."""
        return SpoolTarget(self.book.uri, self.run_id, spool)

    def finish(self, ok: bool = True) -> None:
        self.book.finish(self.run_id, ok)


class NullRun:
    """A run that records nothing: what `RunBook.open` gives when the server cannot make
    the run, and every run of a `NullBook`."""

    run_id: str | None = None

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        pass

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def register(self, name: str, artifact_path: str, description: str = "") -> None:
        pass

    def workers(self, spool: Path) -> None:
        return None

    def finish(self, ok: bool = True) -> None:
        pass


class NullBook:
    """A book that tracks nothing (no MLflow): every run it opens is a `NullRun`."""

    reproduction = "untracked"

    def open(
        self, dataset: str, name: str, tags: dict[str, str], parent: str | None = None
    ) -> Run | NullRun:
        return NullRun()
