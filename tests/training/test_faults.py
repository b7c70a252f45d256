"""Faults a long run meets (docs/faults.md), against real components: an
MLflow server (one per module, killed by PID and started again on the same port and store),
a local Ray instance, the synthetic shards.

1. a shard cut short or replaced is named before any work and rebuilt by preprocessing,
   which counts it as rebuilt;
2. with the server down, tracking calls return at once, the outage is said once, and what
   was spooled reaches MLflow when the server is back;
3. the server killed during a unit's training and started again: the unit completes and
   every epoch's metrics end up in MLflow; Ray Train kept that run's last two checkpoints;
4. a truncated checkpoint in the unit cache is reported (which file, why) and the unit
   trained again, once, though two runs ask for it at the same time: both get the same result.
Two `clef reproduce` processes at once: tests/flows/test_concurrent_runs.py.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clef_core.common.errors import ClefError
from clef_core.common.results import UnitResult
from clef_core.method.config import ExperimentConfig, load_config
from clef_core.run.unit import run_unit
from clef_core.tracking.runbook import RunBook
from clef_core.tracking.spool import SpoolTracker, flush_spool, pending, spool_dir
from clef_core.training.protocol import Unit
from clef_core.training.unit_cache import cached_result, key_of, unit_dir

pytestmark = pytest.mark.slow

EPOCHS = 4


class MlflowServer:
    """`mlflow server` on a fixed port and SQLite store, which can be killed and restarted."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.folder = folder
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
               "--artifacts-destination", str(self.folder / "artifacts")]  # fmt: skip
        log = (self.folder / "server.log").open("ab")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # faster start
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"mlflow server did not start; see {self.folder / 'server.log'}")

    def kill(self) -> None:
        """SIGKILL to the server's process group (its PID leads it): an outage, not a stop."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.kill()


@pytest.fixture(scope="module")
def data_dir(shard_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("faults")
    os.symlink(shard_dir, data / "shards")
    return data


def _cfg(data: Path) -> ExperimentConfig:
    return load_config(
        "cpu-tiny",
        [f"data.data_dir={data}", f"stage1.epochs={EPOCHS}", "stage1.steps_per_epoch=3",
         "stage1.batch_size=8"],
    )  # fmt: skip


def test_a_cut_or_replaced_shard_is_named_and_rebuilt(synth_root: Path, tmp_path: Path) -> None:
    """The manifest records each shard's size and rows; one that does not open, or opens but
    is not what was recorded, stops training before any work with its name and the command,
    and preprocessing rebuilds exactly those and counts them as rebuilt."""
    import pyarrow.parquet as pq

    from clef_core.common.manifest import Manifest
    from clef_core.training.cache import verify_shards
    from preprocessing.pipeline import PreprocessOptions, finish, plan, process_sequence

    opts = PreprocessOptions("rafdb", synth_root / "RAF-DB", tmp_path, image_size=112)

    def preprocess() -> tuple[Manifest, list]:
        sequences, issues = plan(opts)
        results = [process_sequence(opts, s) for s in sequences]
        return finish(opts, results, issues), results

    manifest, _ = preprocess()
    stats = manifest.shards
    assert len(stats) >= 2
    assert sum(s.rows for s in stats.values()) == manifest.rows
    verify_shards(tmp_path, "rafdb")
    first, second = (tmp_path / "rafdb" / name for name in manifest.shard_names[:2])
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])  # cut short: does not open
    table = pq.read_table(second)
    pq.write_table(table.slice(0, table.num_rows - 1), second)  # opens, one row short
    with pytest.raises(ClefError) as err:
        verify_shards(tmp_path, "rafdb")
    message = str(err.value)
    assert f"1 unreadable: {first.name} (" in message
    assert f"1 not as recorded: {second.name} (" in message
    assert f"clef preprocess --dataset rafdb --root {(synth_root / 'RAF-DB').resolve()}" in message
    again, results = preprocess()
    rebuilt = sorted(f"{r.key}.parquet" for r in results if r.rebuilt)
    assert rebuilt == sorted([first.name, second.name])
    assert sum(r.skipped for r in results) == len(results) - 2
    assert again.shards == stats and again.rows == manifest.rows
    verify_shards(tmp_path, "rafdb")


def test_tracking_calls_survive_an_outage(
    server: MlflowServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the server down, calls return at once (spooled) and the outage is said once per
    tracker; an open tracker sends its spool by itself when the server is back; one closed
    during the outage says what is not logged and how, and `flush_spool` sends it later."""
    from mlflow import MlflowClient

    from clef_core.tracking.spool import not_logged_message

    client = MlflowClient(server.uri)
    exp = client.create_experiment("faults-spool")
    live, ended = (client.create_run(exp).info.run_id for _ in range(2))
    spool = spool_dir(tmp_path)
    tracker = SpoolTracker(server.uri, live, spool, retry_s=0.5)
    tracker.log_metrics({"loss": 1.0}, step=0)
    server.kill()
    caplog.set_level(logging.WARNING, logger="clef.tracking")
    for step in range(1, 21):
        tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    closed = SpoolTracker(server.uri, ended, spool, retry_s=0.5)
    closed.log_params({"lr": 0.001})
    closed.terminate()
    assert closed.close(timeout=1) == 2  # the params and the end, kept
    said = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert len([m for m in said if live in m]) == 1, said  # once for 20 calls
    assert pending(spool)[ended] == 2 and pending(spool)[live] >= 20
    message = not_logged_message(pending(spool), server.uri, spool)
    assert message and f"clef sync-tracking --data-dir {tmp_path}" in message
    server.start()  # same port, same store
    deadline = time.monotonic() + 120
    while live in pending(spool) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert live not in pending(spool), "the open tracker did not send its spool by itself"
    tracker.terminate()
    assert tracker.close(timeout=30) == 0
    assert flush_spool(spool) == {}  # the closed tracker's two calls: `clef sync-tracking`
    assert not list(spool.glob("*.jsonl"))  # sent and closed: removed
    history = client.get_metric_history(live, "loss")
    assert sorted(m.step for m in history) == list(range(21))  # each once
    assert client.get_run(live).info.status == "FINISHED"
    run = client.get_run(ended)
    assert run.data.params == {"lr": "0.001"} and run.info.status == "FINISHED"


@dataclass
class Trained:
    cfg: ExperimentConfig
    unit: Unit
    result: UnitResult
    book: RunBook
    storage: Path  # the unit's Ray Train storage folder
    seen: set[str]  # every checkpoint folder that showed there during training


@pytest.fixture(scope="module")
def through_outage(server: MlflowServer, data_dir: Path, local_ray: None) -> Trained:
    """A stage-1 unit trained on Ray while its MLflow server is killed (after the first
    epoch's checkpoint) and started again (after the third's, or when training ended)."""
    cfg = _cfg(data_dir)
    unit = Unit(1, "bp4d", 1)
    book = RunBook(server.uri, "faults", "outage", spool_dir(data_dir))
    out: dict[str, UnitResult | BaseException] = {}

    def train() -> None:
        try:
            out["result"] = run_unit(cfg, unit, book)
        except BaseException as err:
            out["result"] = err

    checkpoints = data_dir / "ray_results" / f"{unit.name}-{key_of(cfg, unit)}"
    thread = threading.Thread(target=train)
    thread.start()

    seen: set[str] = set()  # Ray keeps the last 2 checkpoints: count every one that shows

    def reached(n: int) -> bool:
        seen.update(p.name for p in checkpoints.glob("checkpoint_*") if p.is_dir())
        return len(seen) >= n

    deadline = time.monotonic() + 300
    while not reached(1) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reached(1), f"no first checkpoint: {out}"
    server.kill()
    while not reached(3) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    server.start()
    thread.join(timeout=300)
    result = out["result"]
    assert isinstance(result, UnitResult), f"training stopped: {result!r}"
    assert not book.close(), "calls still spooled with the server back"
    return Trained(cfg, unit, result, book, checkpoints, seen)


def test_training_through_a_tracking_outage_logs_every_epoch(
    through_outage: Trained, server: MlflowServer, data_dir: Path
) -> None:
    from mlflow import MlflowClient

    result = through_outage.result
    assert not result.cached and result.run_id
    client = MlflowClient(server.uri)
    history = client.get_metric_history(result.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(EPOCHS))  # each epoch, once
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["unit"] == "s1-bp4d-fold1"
    assert pending(spool_dir(data_dir)) == {}


def test_ray_train_keeps_the_latest_two_checkpoints(through_outage: Trained) -> None:
    """`CheckpointConfig(num_to_keep=2)`: of a checkpoint per epoch, the storage keeps the
    last two epochs' (a restart resumes from the last); the older ones were written, then
    removed. The unit's cached checkpoint is the last epoch's."""
    from clef_core.method.checkpoint import read_meta

    kept = sorted(p for p in through_outage.storage.glob("checkpoint_*") if p.is_dir())
    assert len(kept) == 2, kept
    assert len(through_outage.seen | {p.name for p in kept}) >= 3  # older ones went
    assert [read_meta(p)["epoch"] for p in kept] == [EPOCHS - 2, EPOCHS - 1]
    assert read_meta(Path(through_outage.result.checkpoint))["epoch"] == EPOCHS - 1


def test_a_truncated_checkpoint_is_retrained_once_by_two_runs(
    through_outage: Trained, caplog: pytest.LogCaptureFixture
) -> None:
    """Two runs ask for the unit at once: one says why the cached one cannot be used and
    trains it, the other waits on the unit's lock and reuses that result."""
    cfg, unit = through_outage.cfg, through_outage.unit
    model = Path(through_outage.result.checkpoint) / "model.pt"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 3])
    caplog.set_level(logging.WARNING, logger="clef.experiment")
    results: list[UnitResult | BaseException] = []

    def run() -> None:
        try:
            results.append(run_unit(cfg, unit, None))
        except BaseException as err:
            results.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(isinstance(r, UnitResult) for r in results), results
    trained = [r for r in results if isinstance(r, UnitResult) and not r.cached]
    reused = [r for r in results if isinstance(r, UnitResult) and r.cached]
    assert len(trained) == 1 and len(reused) == 1  # trained once, not twice
    assert trained[0].metrics == reused[0].metrics and trained[0].key == reused[0].key
    damaged = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(damaged) == 1 and str(model) in damaged[0], damaged
    assert "BadZipFile" in damaged[0]
    assert cached_result(cfg, unit) is not None  # whole again
    folder = unit_dir(cfg, unit, trained[0].key)
    assert (folder / "result.damaged.json").is_file()


def test_a_unit_lock_held_by_another_process_is_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The per-unit lock across processes (what two `clef reproduce` runs meet): the second
    waits, says for whom, and goes on only once the first let go; a killed holder frees it."""
    from clef_core.training.unit_cache import unit_lock

    folder = tmp_path / "runs" / "s1-bp4d-fold1-abc"
    done = tmp_path / "first-finished"
    holder = (
        "import sys, time; from pathlib import Path; from clef_core.training.unit_cache import unit_lock\n"
        f"with unit_lock(Path({str(folder)!r}), 'u'):\n"
        "    print('held', flush=True); time.sleep(3)\n"
        f"    Path({str(done)!r}).write_text('x')\n"
    )
    first = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None and first.stdout.readline().strip() == "held"
    caplog.set_level(logging.WARNING, logger="clef.experiment")
    with unit_lock(folder, "s1-bp4d-fold1"):
        assert done.is_file()  # entered only after the first process finished its unit
    assert first.wait(timeout=30) == 0
    said = [r.getMessage() for r in caplog.records]
    assert any(f"process {first.pid} on" in m and "waiting" in m for m in said), said
    killed = subprocess.Popen([sys.executable, "-c", holder.replace("time.sleep(3)", "time.sleep(300)")],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert killed.stdout is not None and killed.stdout.readline().strip() == "held"
    killed.kill()
    killed.wait(timeout=30)
    with unit_lock(folder, "s1-bp4d-fold1"):  # no stale lock after a crash
        pass
