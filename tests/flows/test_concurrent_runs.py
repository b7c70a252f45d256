"""Two `clef reproduce` at once on one data dir (docs/faults.md): two real
processes of the console script, started together on the synthetic BP4D fold 1 (cpu-tiny, two
steps a stage, the session's shards), each with its own local Ray instance and temporary
Prefect server, both on the data dir's Prefect database, MLflow store and unit cache.

Both exit 0 without a traceback and write the same report; each unit was trained once: one
MLflow training run per unit (the other process's run of it points at that one as reused
from the cache), one process's results say trained and the other's cached, and a process
that reached a unit while the other was training it said so and waited. Both run with
`--probes`: the report holds the linear probes of the stage-1 checkpoint and a random init.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.server]

CLEF = str(Path(sys.executable).with_name("clef"))
UNITS = ("s1-bp4d-fold1", "s2-bp4d-fold1")
SETS = ["stage1.epochs=1", "stage1.steps_per_epoch=2", "stage1.batch_size=8",
        "stage2.epochs=1", "stage2.steps_per_epoch=2", "stage2.batch_size=8"]  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(synth_root: Path, shard_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh data dir on the session's synthetic data and BP4D shards: the flow's
    preprocessing finds every shard done and rewrites only this dir's copy of the manifest."""
    data = tmp_path_factory.mktemp("concurrent") / "data"
    shards = data / "shards" / "bp4d"
    shards.mkdir(parents=True)
    os.symlink(synth_root, data / "synthetic")  # its synth.json: nothing is generated
    for shard in (shard_dir / "bp4d").glob("*.parquet"):
        os.symlink(shard, shards / shard.name)
    shutil.copy(shard_dir / "bp4d" / "manifest.json", shards)
    return data


def _reproduce(data: Path, log: Path) -> subprocess.Popen:
    """`clef reproduce` as a user runs it: the data dir's own Prefect home and MLflow store
    (not the test session's), a local Ray instance, its own process group."""
    drop = ("MLFLOW_TRACKING_URI", "PREFECT_HOME", "PREFECT_API_URL", "RAY_ADDRESS")
    env = {k: v for k, v in os.environ.items() if k not in drop} | {"COLUMNS": "200",
                                                                    "NO_COLOR": "1"}  # fmt: skip
    sets = [a for s in SETS for a in ("--set", s)]
    cmd = [CLEF, "reproduce", "--preset", "cpu-tiny", "--dataset", "bp4d", "--fold", "1",
           "--data-dir", str(data), "--probes", *sets]  # fmt: skip
    with log.open("w") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def test_two_reproductions_at_once_train_each_unit_once(data_dir: Path) -> None:
    from mlflow import MlflowClient

    logs = [data_dir.parent / f"reproduce-{n}.log" for n in (1, 2)]
    procs = [_reproduce(data_dir, log) for log in logs]
    try:
        codes = [p.wait(timeout=900) for p in procs]
    finally:
        for p in procs:  # each leads its own group: its Ray instance and Prefect server too
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    printed = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n=====\n".join(out[-3000:] for out in printed)
    for out in printed:
        assert "Traceback" not in out, out[-5000:]
        assert "report: " in out
        # The console keeps the tasks' own lines; Prefect's engine lines go to the log file.
        assert "train_loss" in out and "Finished in state" not in out, out[-3000:]
    assert "Finished in state Completed" in (data_dir / "logs" / "clef.log").read_text()

    # The same report; each process's results say which units it trained.
    reports = sorted(p for p in (data_dir / "reports").iterdir() if p.is_dir())
    assert len(reports) == 2, reports
    texts = [(r / "report.md").read_text() for r in reports]
    assert texts[0] == texts[1] and "bp4d: AU detection" in texts[0]
    # --probes: the stage-1 checkpoint against a random init, a table and a plot in each
    assert "linear probes" in texts[0] and "stage 1 (s1-bp4d-fold1)" in texts[0]
    assert all((r / "probes" / "probes.png").is_file() for r in reports)
    results = [json.loads((r / "results.json").read_text())["runs"] for r in reports]
    units = [{u["unit"]: u for rows in runs.values() for u in rows} for runs in results]
    assert set(units[0]) == set(units[1]) == set(UNITS)
    for name in UNITS:
        first, second = ({k: v for k, v in u[name].items() if k != "cached"} for u in units)
        assert first == second, name  # same key, checkpoint, metrics, training run
        assert sorted(u[name]["cached"] for u in units) == [False, True], name

    # MLflow: one training run per unit; the other process's run of it is the cached one.
    client = MlflowClient(f"sqlite:///{data_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("clef-bp4d")
    assert exp is not None
    for name in UNITS:
        runs = client.search_runs([exp.experiment_id], f"tags.`clef.unit` = '{name}'")
        trained = [r for r in runs if "clef.cached_from" not in r.data.tags]
        reused = [r for r in runs if "clef.cached_from" in r.data.tags]
        assert len(trained) == 1 and len(reused) == 1, (name, len(trained), len(reused))
        assert reused[0].data.tags["clef.cached_from"] == trained[0].info.run_id
        done = next((data_dir / "runs").glob(f"{name}-*/result.json"))
        assert json.loads(done.read_text())["run_id"] == trained[0].info.run_id

    # They overlapped: one reached a unit while the other trained it, and waited for it.
    waits = [
        line
        for out, other in ((printed[0], procs[1]), (printed[1], procs[0]))
        for line in out.splitlines()
        if f"being trained by process {other.pid} on" in line
    ]
    assert waits and all("waiting for it to reuse its result" in w for w in waits), printed
    assert not list(data_dir.glob("runs/*/result.damaged.json"))
