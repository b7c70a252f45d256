"""The spool: how tracking calls reach MLflow without ever waiting for it.

A tracking server that goes away must never stop training (ours: the design of issue 22).
Every call of a run's tracker is appended to a local spool first, one JSON line per call
(`<data_dir>/tracking-spool/<run_id>.<host>-<pid>-<n>.jsonl`), and a background thread sends
the lines to MLflow in order, counting what it sent in a `.sent` file beside it. When the
server does not answer, the thread says so once (a warning), keeps the lines and tries again
later; training goes on. Closing a tracker tries for a few seconds more; what is still not
sent stays in the spool, and `flush_spool` (`clef sync-tracking`, and every later `clef`
training run at its start and end) sends it when the server is back. MLflow's own HTTP
retries (7 with a growing back-off: minutes per call) are cut to a few seconds, since the
spool retries instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("clef.tracking")

SPOOL = "tracking-spool"
# MLflow's HTTP client defaults (7 retries, back-off factor 2, 120 s timeout) block a call for
# minutes when the server is down; the spool retries instead, so each call fails fast.
QUICK_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
MAX_BACKOFF_S = 30.0  # the longest a spool waits between two tries while the server is down
# Server answers that a retry cannot change: the call is dropped (and said), not retried.
_TRANSIENT = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}


def spool_dir(data_dir: Path) -> Path:
    return data_dir / SPOOL


def quick_http() -> None:
    """Fail-fast MLflow HTTP settings for this process (a value set by the user is kept)."""
    for key, value in QUICK_HTTP.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class Rejected(Exception):
    """The server refused a call for good (a bad value, a deleted run): not worth a retry."""


def _send(client: Any, run_id: str, record: dict[str, Any]) -> None:
    """One spooled call, made on the server (raises on failure)."""
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException, RestException

    op = record["op"]
    try:
        if op == "metrics":
            items = [
                Metric(k, float(v), record["ts"], record["step"]) for k, v in record["m"].items()
            ]
            client.log_batch(run_id, metrics=items)
        elif op == "params":
            items = [Param(k, v) for k, v in record["p"].items()]
            for i in range(0, len(items), 100):  # MLflow's batch limit
                client.log_batch(run_id, params=items[i : i + 100])
        elif op == "tags":
            for k, v in record["t"].items():
                client.set_tag(run_id, k, v)
        elif op == "artifact":
            path = Path(record["path"])
            if not path.exists():
                raise Rejected(f"{path} is gone")
            if path.is_dir():
                client.log_artifacts(run_id, str(path), record["dest"])
            else:
                client.log_artifact(run_id, str(path), record["dest"])
        elif op == "register":
            with contextlib.suppress(MlflowException):  # already registered: add a version
                client.create_registered_model(record["name"])
            source = f"{client.get_run(run_id).info.artifact_uri}/{record['artifact_path']}"
            version = client.create_model_version(
                record["name"], source, run_id=run_id, description=record.get("description") or None
            )
            client.set_tag(run_id, "clef.model_version", str(version.version))
        elif op == "terminate":
            client.set_terminated(run_id, record["status"], record["ts"])
    except RestException as err:
        if err.error_code not in _TRANSIENT:
            raise Rejected(str(err).splitlines()[0]) from err
        raise


def _read(path: Path) -> list[dict[str, Any]]:
    """The spool's complete lines (a line cut by a crash mid-write is left for later)."""
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _sent(path: Path) -> int:
    try:
        return int(path.with_suffix(".sent").read_text() or 0)
    except (OSError, ValueError):
        return 0


def _set_sent(path: Path, n: int) -> None:
    tmp = path.with_suffix(".sent.tmp")
    tmp.write_text(str(n))
    tmp.replace(path.with_suffix(".sent"))


def _host() -> str:
    return socket.gethostname().replace(".", "_")  # no dots: they separate the name's fields


def _writer_gone(path: Path) -> bool:
    """The process that wrote the spool file ended (same host only; elsewhere: unknown)."""
    host, pid, _ = path.name.removesuffix(".jsonl").partition(".")[2].rsplit("-", 2)
    if host != _host():
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return True
    return False


def flush_file(path: Path, client: Any) -> int:
    """Send a spool file's unsent calls in order; returns how many are left (0: all sent, and
    the file is removed once its writer has closed it). Raises when the server fails. Two
    flushers of one file (a tracker's thread, a driver, `clef sync-tracking`) take turns."""
    try:
        handle = path.open()
    except FileNotFoundError:  # sent and removed by another flusher
        return 0
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes
        if not path.exists():  # the flusher before this one sent it all and removed it
            return 0
        records = _read(path)
        done = _sent(path)
        for i in range(done, len(records)):
            record = records[i]
            if record["op"] not in ("open", "closed"):
                try:
                    _send(client, record["run"], record)
                except Rejected as err:
                    log.warning("MLflow refused a %s call of run %s (%s): dropped",
                                record["op"], record["run"], err)  # fmt: skip
            _set_sent(path, i + 1)
        closed = bool(records) and records[-1]["op"] == "closed"
        if closed or _writer_gone(path):
            path.with_suffix(".sent").unlink(missing_ok=True)
            path.unlink(missing_ok=True)
    return 0


def pending(spool: Path, run_id: str | None = None) -> dict[str, int]:
    """Unsent calls per run in the spool."""
    out: dict[str, int] = {}
    for path in sorted(spool.glob(f"{run_id or '*'}.*.jsonl")):
        try:
            records = _read(path)[_sent(path) :]
        except OSError:  # removed meanwhile: sent
            continue
        for r in records:
            if r["op"] not in ("open", "closed"):
                out[r["run"]] = out.get(r["run"], 0) + 1
    return out


def flush_spool(
    spool: Path, tracking_uri: str | None = None, run_id: str | None = None, quiet: bool = False
) -> dict[str, int]:
    """Send every spooled call (of `run_id`, or all) to the server each spool file names (or
    `tracking_uri`); returns what is left per run (empty: everything is in MLflow)."""
    if not spool.is_dir():
        return {}
    from mlflow import MlflowClient

    quick_http()
    clients: dict[str, Any] = {}
    down: set[str] = set()
    for path in sorted(spool.glob(f"{run_id or '*'}.*.jsonl")):
        try:
            head = _read(path)[:1]
        except OSError:  # sent and removed meanwhile
            continue
        uri = tracking_uri or (head[0].get("uri") if head else None)
        if not uri or uri in down:
            continue
        try:
            flush_file(path, clients.setdefault(uri, MlflowClient(uri)))
        except Exception as err:  # the server is down (or failing): keep the rest for later
            down.add(uri)
            if not quiet:
                log.warning("MLflow at %s: %s; calls kept in %s", uri,
                            str(err).splitlines()[0][:200], spool)  # fmt: skip
    return pending(spool, run_id)


class SpoolTracker:
    """Logs into an existing run (created by the driver), from any process, through the
    spool: each call is a line on disk before this returns; a thread sends them."""

    _n = itertools.count()

    def __init__(self, tracking_uri: str, run_id: str, spool: Path, retry_s: float = 5.0) -> None:
        quick_http()
        spool.mkdir(parents=True, exist_ok=True)
        self.uri, self.run_id, self.spool, self.retry_s = tracking_uri, run_id, spool, retry_s
        name = f"{run_id}.{_host()}-{os.getpid()}-{next(self._n)}.jsonl"
        self.path = spool / name
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._client: Any = None
        self.outage: str | None = None  # what the server said when it stopped answering
        self._append({"op": "open", "uri": tracking_uri})
        self._thread = threading.Thread(target=self._run, name=f"spool-{run_id}", daemon=True)
        self._thread.start()

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps({**record, "run": self.run_id}) + "\n"
        with self._lock, self.path.open("a") as f:
            f.write(line)
        self._wake.set()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        m = {k: float(v) for k, v in metrics.items()}
        self._append({"op": "metrics", "m": m, "step": int(step), "ts": int(time.time() * 1000)})

    def log_params(self, params: dict[str, Any]) -> None:
        self._append({"op": "params", "p": {k: str(v)[:6000] for k, v in params.items()}})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._append({"op": "artifact", "path": str(Path(path).resolve()), "dest": artifact_path})

    def set_tags(self, tags: dict[str, str]) -> None:
        self._append({"op": "tags", "t": {k: str(v) for k, v in tags.items()}})

    def register(self, name: str, artifact_path: str, description: str = "") -> None:
        """Register the run's logged `artifact_path` as a new version of model `name` (tagged
        `clef.model_version` on the run), with `description`."""
        record = {"op": "register", "name": name, "artifact_path": artifact_path}
        self._append({**record, "description": description})

    def terminate(self, ok: bool = True) -> None:
        status = "FINISHED" if ok else "FAILED"
        self._append({"op": "terminate", "status": status, "ts": int(time.time() * 1000)})

    def _flush(self) -> bool:
        """One attempt; True when everything is sent."""
        from mlflow import MlflowClient

        try:
            self._client = self._client or MlflowClient(self.uri)
            flush_file(self.path, self._client)
        except Exception as err:  # down, restarting, overloaded: keep the lines
            if self.outage is None:
                self.outage = str(err).splitlines()[0][:200]
                log.warning(
                    "MLflow at %s does not answer (%s); training goes on and run %s's calls "
                    "are kept in %s, sent when it is back", self.uri, self.outage,
                    self.run_id, self.spool,
                )  # fmt: skip
            return False
        if self.outage is not None:
            log.warning("MLflow at %s answers again: run %s's spooled calls sent",
                        self.uri, self.run_id)  # fmt: skip
            self.outage = None
        return True

    def _run(self) -> None:
        ok, delay = True, self.retry_s
        while True:
            if ok:  # idle until a call comes (or a while passes)
                self._wake.wait(timeout=self.retry_s)
            else:  # the server is down: back off, whatever comes in meanwhile
                self._stop.wait(delay)
            if self._stop.is_set():
                return
            self._wake.clear()
            ok = self._flush()
            delay = self.retry_s if ok else min(MAX_BACKOFF_S, delay * 1.5)

    def close(self, timeout: float = 10.0) -> int:
        """Stop the thread, try to send the rest for up to `timeout` s; returns how many calls
        are left in the spool (sent later by `flush_spool`)."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._append({"op": "closed"})
        deadline = time.monotonic() + timeout
        while not self._flush() and time.monotonic() < deadline:
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        return sum(pending(self.spool, self.run_id).values()) if self.path.exists() else 0


@dataclass(frozen=True)
class SpoolTarget:
    """Where a run's calls go, as a value that travels to Ray workers (pickled in the train
    loop's config): called on the worker, it opens that worker's own spool file for the run."""

    tracking_uri: str
    run_id: str
    spool: Path

    def __call__(self) -> SpoolTracker:
        return SpoolTracker(self.tracking_uri, self.run_id, self.spool)


def default_spool(tracking_uri: str) -> Path:
    """Beside a SQLite store (the data dir by default); for a server, in $CLEF_DATA_DIR."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).parent / SPOOL
    return Path(os.environ.get("CLEF_DATA_DIR", "data")) / SPOOL


def not_logged_message(left: dict[str, int], tracking_uri: str, spool: Path) -> str | None:
    """What the end of a run says when tracking calls are still spooled, and how they get
    there; None when everything is in MLflow."""
    if not left:
        return None
    return (
        f"{sum(left.values())} tracking calls of {len(left)} MLflow run(s) are not in "
        f"{tracking_uri} yet (it did not answer); they are kept in {spool} and sent by "
        f"`clef sync-tracking --data-dir {spool.parent}` or by the next clef run on this "
        f"data dir (checkpoints and results are complete)"
    )
