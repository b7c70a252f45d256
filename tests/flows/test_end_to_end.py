"""The product end to end on the synthetic BP4D fold 1, against one local stack per module.

`clef stack up` (Prefect, MLflow, a Ray head and the deployment server, ports chosen free) is
started once for the module in one data dir; its tests, in order:

1. every socket the stack's processes (and a local Ray that `clef` starts) listen on is on
   127.0.0.1;
2. a deployment run with a root that does not exist fails in seconds with the root in its
   state message; one whose preprocessing fails ends with that task's message and its
   downstream tasks Cancelled; the deployments' stored parameters are their form's defaults;
3. `clef reproduce` (the `clef` Prefect flow, in-process) is killed in the middle of
   fine-tuning, and `prefect deployment run clef/smoke` (same settings) completes it on the
   stack without redoing preprocessing or pre-training, logging to its MLflow server, whose
   REST API then holds the fold's f1_mean / per-AU F1 under the parent run, the plots, one
   metric point per epoch (rank 0 only) and the registered model; the experiment page a link
   opens shows its training runs (headless Chromium); `clef reproduce` again: every unit from
   the cache, the report written;
4. the README's `ray job submit` trains a unit on the stack's Ray head, results in MLflow;
   `clef submit` runs a command there;
5. the Prefect server killed while a deployment run trains stage 1 and started again on its
   port and database: the run goes on into stage 2; the whole stack then stopped (`down`)
   while that run trains stage 2 and started again (`up`): the run is marked Crashed and
   its rerun completes with stage 1 from the cache;
and `clef stack down` stops exactly what was started. The stack requires its secret
(`flows.stack_auth`): the commands here run with what `clef stack env` exports, the REST
checks send its credentials, and the MLflow UI is screenshot through a proxy that adds them
(as a browser does once its user typed them into the login prompt).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import mlflow
import pytest

from clef_core.method.config import MAIN
from flows.ports import Ports, choose_ports
from flows.serve import FULL, SMOKE, stored
from flows.stack import down, read_state, start_again, status, up
from flows.stack_auth import auth_headers, client_env, read_secret
from flows.stack_process import Service
from flows.train import experiment_links, runs_url
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The stack's Basic credentials (Prefect and MLflow take the same), set by the fixture: every
# REST call of these tests sends them.
AUTH: dict[str, str] = {}


@dataclass
class Stack:
    data: Path
    ports: Ports
    services: list[Service]

    @property
    def env(self) -> dict[str, str]:
        """A shell's env for the README's commands (what `clef stack env` prints)."""
        return {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{self.ports.prefect}/api",
                "PREFECT_HOME": str(self.data / "prefect"),
                **client_env(self.data, read_secret(self.data))}  # fmt: skip


@pytest.fixture(scope="module")
def stack(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("e2e") / "data"
    data.mkdir()
    os.symlink(synth_root, data / "synthetic")  # the session's synthetic data, as the demo's
    # Every port asked for (free now): a default one may be taken by the time Ray binds it.
    ports = choose_ports({name: _free_port() for name in Ports.names()})
    try:
        services = up(data, ports)
        AUTH.update(auth_headers("prefect", read_secret(data)))
        assert {s.name for s in services} == {"prefect", "mlflow", "ray", "deployments"}
        # `up` waited for each; a health check can still miss its 2 s on a loaded machine.
        answering = lambda: all(alive and ok for _, alive, ok in status(data))  # noqa: E731
        assert wait_for(answering, 60), status(data)
        assert all("127.0.0.1" in s.url for s in services)
        yield Stack(data, ports, services)
    finally:
        stopped = down(data)
    assert set(stopped) == {"prefect", "mlflow", "ray", "deployments"}
    assert status(data) == []
    assert not [s.pid for s in services if _alive_pid(s.pid)]


def _alive_pid(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _reproduce(data_dir: Path) -> subprocess.Popen:
    """`clef reproduce` with the smoke deployment's settings, in its own process group."""
    sets = [a for o in SMOKE.overrides for a in ("--set", o)]
    cmd = [sys.executable, "-m", "flows.cli", "reproduce", "--preset", SMOKE.preset,
           "--dataset", "bp4d", "--fold", "1", "--data-dir", str(data_dir), *sets]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_HOME")}
    log = (data_dir.parent / f"reproduce-{time.time():.0f}.log").open("w")
    return subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: dict) -> Any:  # an object or a list, as the API answers
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json", **AUTH}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _listening(pid: int) -> list[tuple[str, str, int]]:
    """(process, address, port) of every socket `pid` and its descendants listen on."""
    import psutil

    root = psutil.Process(pid)
    out = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            name = " ".join(proc.cmdline()[:3])[-60:]
            for c in proc.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and not c.raddr):
                    out.append((name, c.laddr.ip, c.laddr.port))
        except psutil.NoSuchProcess:
            continue
    return out


def _loopback(ip: str) -> bool:
    return ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def test_services_listen_on_loopback_only(stack: Stack, tmp_path: Path) -> None:
    sockets = {s.name: _listening(s.pid) for s in stack.services}
    # The deployment server only polls Prefect: it may listen nowhere (seen in CI).
    assert all(v for n, v in sockets.items() if n != "deployments"), f"no socket: {sockets}"
    ports = {port for rows in sockets.values() for _, _, port in rows}
    # GCS, client server, dashboard, dashboard agent, Prefect, MLflow among them.
    p = stack.ports
    assert {p.ray, p.ray_client, p.ray_dashboard, p.ray_agent, p.prefect, p.mlflow} <= ports
    wide = {n: [r for r in rows if not _loopback(r[1])] for n, rows in sockets.items()}
    assert not any(wide.values()), f"listening beyond 127.0.0.1: {wide}"

    # The local Ray instance `clef` starts when no cluster is given.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    code = "from clef_core.common.runtime import init_ray; init_ray(None); print('up', flush=True); input()"
    local = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert local.stdout is not None and local.stdout.readline().strip() == "up"
        rows = _listening(local.pid)
        assert len(rows) >= 3, rows  # GCS, raylet, agents, ...
        assert not [r for r in rows if not _loopback(r[1])], rows
    finally:
        local.communicate("\n", timeout=60)  # ray.shutdown at exit


def test_stack_status_and_env_show_its_ports(stack: Stack) -> None:
    """The README's `clef stack status` and `eval "$(clef stack env)"` for this stack."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    where = ["--data-dir", str(stack.data)]
    shown = subprocess.run([str(BIN / "clef"), "stack", "status", *where], env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    for service in stack.services:  # up (or, on a loaded machine, slow to answer: starting)
        assert f"{service.name:12s} {service.url}  (pid {service.pid})" in shown.stdout
    assert "down " not in shown.stdout and f"mlflow={stack.ports.mlflow}," in shown.stdout
    exports = subprocess.run([str(BIN / "clef"), "stack", "env", *where], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = dict(line.removeprefix("export ").split("=", 1) for line in exports.stdout.splitlines())
    assert read_secret(stack.data) not in exports.stdout  # read from its file by the shell
    assert lines["PREFECT_API_URL"] == stack.env["PREFECT_API_URL"]
    assert lines["RAY_API_SERVER_ADDRESS"] == f"http://127.0.0.1:{stack.ports.ray_dashboard}"
    with urllib.request.urlopen(f"{lines['MLFLOW_TRACKING_URI']}/health", timeout=10) as r:
        assert r.status == 200


def _deployment_run(stack: Stack, name: str, **params: object) -> tuple[dict, str]:
    """`prefect deployment run NAME --param K=V ... --watch` as the README writes it; returns
    the flow run (from the API) and what the command printed."""
    args = [a for k, v in params.items() for a in ("--param", f"{k}={json.dumps(v)}")]
    run = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", name, *args, "--watch",
         "--watch-timeout", "300"],
        # Wide: rich wraps at 80 columns in a pipe, which can split a long path in a message.
        env={**stack.env, "COLUMNS": "1000"}, capture_output=True, text=True, timeout=360,
    )  # fmt: skip
    printed = " ".join((run.stdout + run.stderr).split())  # unwrapped
    assert run.returncode != 0, printed[-3000:]
    flow_run_id = printed.split("UUID:")[1].split()[0]
    api = f"http://127.0.0.1:{stack.ports.prefect}/api"
    return _get(f"{api}/flow_runs/{flow_run_id}"), printed


def _task_runs(api: str, flow_run_id: str) -> list[dict]:
    return _post(f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})


def _seconds(flow_run: dict) -> float:
    from datetime import datetime

    start, end = (datetime.fromisoformat(flow_run[k]) for k in ("start_time", "end_time"))
    return (end - start).total_seconds()


def test_failing_deployment_runs_say_why(stack: Stack, tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{stack.ports.prefect}/api"
    for name, params in (("full-reproduction", FULL), ("smoke", SMOKE)):
        deployment = _get(f"{api}/deployments/name/clef/{name}")
        assert deployment["parameters"] == stored(params)
        schema = deployment["parameter_openapi_schema"]["properties"]
        assert {k: v.get("default") for k, v in schema.items()} == stored(params)

    # A root that does not exist: the README's full-reproduction line with one root changed;
    # the deployment's other parameters (paper preset, no synthetic data) stay.
    bad = "/nonexistent/BP4D"
    flow_run, printed = _deployment_run(stack, "clef/full-reproduction", roots={"bp4d": bad})
    assert flow_run["state"]["type"] == "FAILED"
    assert flow_run["state"]["message"] == f"bp4d: dataset root {bad} does not exist"
    assert f"failed-because * bp4d: dataset root {bad} does not exist" in printed  # --watch
    assert "UnfinishedRun" not in printed
    assert _seconds(flow_run) < 30, f"a bad root took {_seconds(flow_run):.0f} s to fail"

    # A root that is not a BP4D layout: preprocessing fails, stage 1 and 2 never run.
    empty = tmp_path / "not-bp4d"
    empty.mkdir()
    flow_run, printed = _deployment_run(stack, "clef/smoke", roots={"bp4d": str(empty)})
    message = flow_run["state"]["message"]
    assert message.startswith(f"{empty} is not a bp4d layout"), message
    assert f"failed-because * {empty} is not a bp4d layout" in printed
    assert "UnfinishedRun" not in printed
    tasks = _task_runs(api, flow_run["id"])
    states = {t["name"]: (t["state"]["type"], t["state"]["message"]) for t in tasks}
    assert states["preprocess-bp4d"][0] == "FAILED"
    # Stage 1, stage 2 and its evaluation (the last two keep Prefect's default names: their
    # inputs never resolved).
    downstream = {n: s for n, s in states.items() if n != "preprocess-bp4d"}
    assert len(downstream) == 3 and f"{MAIN}:s1-bp4d-fold1" in downstream, states
    assert all(t == "CANCELLED" and message in m for t, m in downstream.values()), downstream


def test_killed_flow_resumes_on_the_stack_and_a_rerun_is_cached(stack: Stack) -> None:
    data = stack.data
    runs = data / "runs"

    # 1. Killed in the middle of fine-tuning.
    first = _reproduce(data)
    started_s2 = wait_for(lambda: any((data / "ray_results").glob("s2-bp4d-fold1-*")), 600)
    os.killpg(first.pid, signal.SIGKILL)  # the flow, its Ray instance, everything
    first.wait()
    assert started_s2, "fine-tuning never started"
    s1 = next(runs.glob("s1-bp4d-fold1-*/result.json"))
    s1_mtime = s1.stat().st_mtime
    shard = next((data / "shards" / "bp4d").glob("*.parquet"))
    shard_mtime = shard.stat().st_mtime
    assert not list(runs.glob("s2-bp4d-fold1-*/result.json"))

    # 2. Completed by the smoke deployment on the local stack (README: PREFECT_API_URL set).
    run = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", "clef/smoke", "--watch",
         "--watch-timeout", "600"],
        env=stack.env, capture_output=True, text=True, timeout=660,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Completed" in run.stdout + run.stderr
    assert s1.stat().st_mtime == s1_mtime  # pre-training was not redone
    assert shard.stat().st_mtime == shard_mtime  # nor was preprocessing
    _check_mlflow_server(stack, data.parent)

    # 3. Nothing changed: every unit from the cache.
    s2 = next(runs.glob("s2-bp4d-fold1-*/result.json"))
    s2_mtime = s2.stat().st_mtime
    assert _reproduce(data).wait(timeout=600) == 0
    assert s2.stat().st_mtime == s2_mtime  # nothing retrained
    latest = data / "reports" / (data / "reports" / "latest").read_text()
    assert "bp4d: AU detection" in (latest / "report.md").read_text()
    html = (latest / "report.html").read_text()
    assert "SYNTHETIC DATA" in html and html.count("data:image/png;base64") >= 2
    client = mlflow.MlflowClient(f"sqlite:///{data / 'mlflow.db'}")
    exp = client.get_experiment_by_name("clef-bp4d")
    assert exp is not None
    parents = client.search_runs([exp.experiment_id], "tags.`clef.parent` = '1'")
    assert len(parents) == 2  # the killed reproduction's and the cached one's
    done = [p for p in parents if "f1_mean" in p.data.metrics]
    assert len(done) == 1, "the cached reproduction reports the fold mean"
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{done[0].info.run_id}'"
    )
    assert {c.data.tags["clef.unit"] for c in children} == {"s1-bp4d-fold1", "s2-bp4d-fold1"}
    assert all("clef.cached_from" in c.data.tags for c in children)


def _check_mlflow_server(stack: Stack, out: Path) -> None:
    """What the deployment logged, read back over MLflow's REST API, and the UI in Chromium."""
    ports = stack.ports
    api = f"http://127.0.0.1:{ports.mlflow}/api/2.0/mlflow"
    exp = _get(f"{api}/experiments/get-by-name?experiment_name=clef-bp4d")["experiment"]
    exp_tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
    assert exp_tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = _post(f"{api}/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    metrics = [{m["key"]: m["value"] for m in r["data"].get("metrics", [])} for r in runs]
    parent = next(i for i, t in enumerate(tags) if t.get("clef.parent") == "1")
    fold = next(i for i, t in enumerate(tags) if t.get("clef.unit") == "s2-bp4d-fold1")
    parent_id, fold_id = runs[parent]["info"]["run_id"], runs[fold]["info"]["run_id"]
    assert tags[fold]["mlflow.parentRunId"] == parent_id
    assert "clef.cached_from" not in tags[fold]  # trained here, on the stack's Ray
    assert 0.0 <= metrics[fold]["f1_mean"] <= 1.0 and "f1_au12" in metrics[fold]
    assert metrics[parent]["f1_mean"] == pytest.approx(metrics[fold]["f1_mean"])
    history = _get(f"{api}/metrics/get-history?run_id={fold_id}&metric_key=train_loss")["metrics"]
    assert [m["step"] for m in history] == [0]  # one epoch, one point: rank 0 logs alone
    arts = _get(f"{api}/artifacts/list?run_id={fold_id}&path=plots").get("files", [])
    assert {"plots/f1_per_au.png", "plots/tsne.png"} <= {a["path"] for a in arts}
    models = _get(
        f"http://127.0.0.1:{ports.mlflow}/api/2.0/mlflow/registered-models/get?name=clef-bp4d"
    )
    assert models["registered_model"]["name"] == "clef-bp4d"
    server = f"http://127.0.0.1:{ports.mlflow}"
    # The experiment link `clef` prints opens on the training runs, not the GenAI overview.
    link = f"clef-bp4d: {runs_url(server, exp['experiment_id'])}"
    with mock.patch.dict(os.environ, client_env(stack.data, read_secret(stack.data))):
        assert link in experiment_links(server, "clef")
    with _signed_in(server) as ui:
        base = f"{ui}/#/experiments/{exp['experiment_id']}"
        _screenshot(f"{base}/runs/{urllib.parse.quote(parent_id)}", "mlflow-parent-run.png", out)
        dom = _screenshot(runs_url(ui, exp["experiment_id"]), "mlflow-experiment.png", out)
    if dom is not None:
        assert runs[parent]["info"]["run_name"] in dom, "the experiment page shows no runs"
        assert "No data available" not in dom


@contextlib.contextmanager
def _signed_in(server: str) -> Iterator[str]:
    """A proxy on 127.0.0.1 that adds the stack's credentials to every request for `server`:
    what a browser does once its user typed them into the basic-auth prompt. Headless Chromium
    cannot type, and refuses credentials in the URL for the page's own requests."""
    import http.server
    import threading

    drop = {"host", "origin", "referer", "connection", "accept-encoding"}

    class Forward(http.server.BaseHTTPRequestHandler):
        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            keep = {k: v for k, v in self.headers.items() if k.lower() not in drop}
            req = urllib.request.Request(
                server + self.path, body, {**keep, **AUTH}, method=self.command
            )
            try:
                answer = urllib.request.urlopen(req, timeout=60)
            except urllib.error.HTTPError as err:
                answer = err
            with answer:
                data = answer.read()
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = forward

        def log_message(self, *args: object) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{proxy.server_port}"
    finally:
        proxy.shutdown()
        proxy.server_close()


def _browser() -> str | None:
    return shutil.which("chromium-headless-shell") or shutil.which("chromium")


def _screenshot(url: str, name: str, out: Path) -> str | None:
    """A PNG of the page (in $CLEF_TEST_ARTIFACTS or `out`); returns its rendered DOM."""
    browser = _browser()
    if browser is None:  # the REST checks stand; `make browser` installs it
        warnings.warn("no headless Chromium: the MLflow UI screenshot was not taken", stacklevel=2)
        return None
    png = Path(os.environ.get("CLEF_TEST_ARTIFACTS", out)) / name
    png.parent.mkdir(parents=True, exist_ok=True)
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu",
             "--virtual-time-budget=15000", "--window-size=1400,1000"]  # fmt: skip
    subprocess.run([*flags, f"--screenshot={png}", url], capture_output=True, timeout=120)
    assert png.is_file() and png.stat().st_size > 10_000, "Chromium took no screenshot"
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return dom.stdout


def _readme_block(marker: str) -> str:
    """The docs' shell block (README or site) that contains `marker` (the commands the tests
    mirror)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    text = "\n".join(p.read_text() for p in pages)
    blocks = [b.split("```", 1)[0] for b in text.split("```bash")[1:]]
    return next(b for b in blocks if marker in b)


def test_ray_job_submit_trains_on_the_stack(stack: Stack) -> None:
    data, ports = stack.data, stack.ports
    assert "--runtime-env-json" in _readme_block("ray job submit")  # the form run here
    if not (data / "shards" / "bp4d" / "manifest.json").is_file():  # this test alone
        subprocess.run(
            [str(BIN / "clef"), "preprocess", "--dataset", "bp4d", "--root",
             str(data / "synthetic" / "BP4D"), "--out", str(data / "shards"), "--image-size", "64"],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
    mlflow_uri = f"http://127.0.0.1:{ports.mlflow}"
    # A stage 2 of its own (a schedule no other test uses), on the smoke's stage 1 settings,
    # with two DDP workers as on a cluster (cpu-tiny itself trains on one worker).
    ddp = ["compute.num_workers=2", "compute.cpus_per_worker=0.5"]
    sets = [a for o in [*SMOKE.overrides, "stage2.steps_per_epoch=2", *ddp] for a in ("--set", o)]
    runtime_env = json.dumps({"env_vars": {"PATH": f"{BIN}:${{PATH}}"}})
    cmd = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{ports.ray_dashboard}",
           "--working-dir", str(REPO), "--runtime-env-json", runtime_env, "--",
           "clef", "finetune", "--dataset", "bp4d", "--fold", "1", "--preset", "cpu-tiny", *sets,
           "--data-dir", str(data), "--mlflow-uri", mlflow_uri]  # fmt: skip
    # A shell with the venv's bin not on PATH, as the user had it, and what
    # `clef stack env` exports for the stack's secret.
    env = {**os.environ, **client_env(data, read_secret(data)), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    printed = done.stdout + done.stderr
    assert done.returncode == 0 and "succeeded" in printed, printed[-3000:]
    job = printed.split("Job '")[1].split("'")[0]

    from ray.job_submission import JobStatus, JobSubmissionClient

    headers = auth_headers("ray", read_secret(data))
    client = JobSubmissionClient(f"http://127.0.0.1:{ports.ray_dashboard}", headers=headers)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED
    api = f"{mlflow_uri}/api/2.0/mlflow"
    exp = _get(f"{api}/experiments/get-by-name?experiment_name=clef-bp4d")["experiment"]
    runs = _post(f"{api}/runs/search", {"experiment_ids": [exp["experiment_id"]],
                 "filter": "params.`stage2.steps_per_epoch` = '2'"})["runs"]  # fmt: skip
    trained = [r for r in runs if "f1_mean" in {m["key"] for m in r["data"].get("metrics", [])}]
    assert trained, "the job's fine-tuning left no f1_mean in MLflow"


def test_clef_submit_runs_a_command_on_the_stack(stack: Stack) -> None:
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [str(BIN / "clef"), "submit", "--data-dir", str(stack.data), "--working-dir", str(REPO),
         "--", "config", "show", "cpu-tiny", "--set", "stage2.epochs=3"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-3000:]
    assert "SUCCEEDED" in printed and "epochs: 3" in printed


def _run_deployment(stack: Stack, overrides: list[str]) -> str:
    """`prefect deployment run clef/smoke --param overrides=[...]`, not watched (the watch
    would lose its server below): the flow run's id."""
    run = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", "clef/smoke",
         "--param", f"overrides={json.dumps(overrides)}"],
        env=stack.env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    printed = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == 0, printed[-3000:]
    return printed.split("UUID:")[1].split()[0]


def _started(data: Path, pattern: str, before: set[Path]) -> bool:
    """A unit's Ray Train run began (its storage folder appeared) since `before`."""
    return bool(set((data / "ray_results").glob(pattern)) - before)


def _results(data: Path, unit: str) -> set[Path]:
    return set((data / "runs").glob(f"{unit}-*/result.json"))


# A schedule of its own: the run's units are trained here, not found in the cache. Its stage 2
# runs long enough to be cut: with 2 steps, a quiet machine finished it (and the run,
# Completed) between the test seeing it start and `down` stopping the stack.
LONG = [*SMOKE.overrides, "stage1.steps_per_epoch=3", "stage2.steps_per_epoch=200"]


def _task_state(api: str, flow_run_id: str, unit: str) -> str | None:
    """The state type of the flow run's task for `unit` (named `<row>:<unit>`), if any."""
    tasks = _task_runs(api, flow_run_id)
    return next((t["state"]["type"] for t in tasks if t["name"].endswith(f":{unit}")), None)


def test_a_deployment_run_survives_a_prefect_restart_and_a_stack_restart_crashes_it(
    stack: Stack,
) -> None:
    """One deployment run, two outages. The Prefect server killed (SIGKILL to its group) while
    the run trains stage 1 and started again on the same port and database: the run goes on
    (stage 1 finished after the kill, its task Completed on the restarted server, stage 2
    started, the same run Running, not started again). Then the whole stack stopped (`down`)
    while it trains stage 2 and started again (`up`, on ports free now): the interrupted run
    is marked Crashed, not left Running, and its rerun completes with stage 1 from the
    cache, untouched."""
    data = stack.data
    before = set((data / "ray_results").glob("*"))
    s1_before = _results(data, "s1-bp4d-fold1")
    s2_before = _results(data, "s2-bp4d-fold1")
    run_id = _run_deployment(stack, LONG)
    assert wait_for(lambda: _started(data, "s1-bp4d-fold1-*", before), 600), "no stage 1"
    prefect = next(s for s in stack.services if s.name == "prefect")
    os.killpg(prefect.pid, signal.SIGKILL)
    killed_at = time.time()
    assert wait_for(lambda: not _alive_pid(prefect.pid), 30)
    start_again(data, "prefect")
    stack.services[:] = read_state(data)  # the fixture's `down` and checks see the new PID
    assert wait_for(lambda: _started(data, "s2-bp4d-fold1-*", before), 600), "no stage 2"
    s1 = _results(data, "s1-bp4d-fold1") - s1_before
    assert len(s1) == 1, s1
    done = {p: p.stat().st_mtime for p in s1}
    assert next(iter(done.values())) > killed_at  # stage 1 finished during or after the outage
    api = f"http://127.0.0.1:{stack.ports.prefect}/api"
    going = _get(f"{api}/flow_runs/{run_id}")
    assert going["state"]["type"] == "RUNNING", going
    assert going["run_count"] == 1  # it went on; it was not started again
    # Its stage-1 task ended after the kill: only the run's own process, talking to the
    # restarted server, can have written that Completed.
    assert wait_for(lambda: _task_state(api, run_id, "s1-bp4d-fold1") == "COMPLETED", 120)

    assert set(down(data)) == {"prefect", "mlflow", "ray", "deployments"}
    # Ports free now, as the fixture chose them: on a busy machine one of the old ones
    # (ephemeral-range numbers) was seen taken meanwhile as a connection's local port.
    stack.ports = choose_ports({name: _free_port() for name in Ports.names()})
    stack.services[:] = up(data, stack.ports)
    interrupted = _get(f"http://127.0.0.1:{stack.ports.prefect}/api/flow_runs/{run_id}")
    assert interrupted["state"]["type"] == "CRASHED", interrupted["state"]
    # Either the run's own process reported the interrupt before it ended (Prefect's message)
    # or it ended first and the restarted deployment server marked the orphan (ours): both seen.
    message = interrupted["state"]["message"]
    assert "run the deployment again" in message or "interrupt signal" in message, message
    assert _results(data, "s2-bp4d-fold1") == s2_before  # cut before its end
    rerun = subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", "clef/smoke",
         "--param", f"overrides={json.dumps(LONG)}", "--watch", "--watch-timeout", "600"],
        env=stack.env, capture_output=True, text=True, timeout=660,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "Completed" in rerun.stdout + rerun.stderr
    assert {p: p.stat().st_mtime for p in _results(data, "s1-bp4d-fold1") - s1_before} == done
    assert len(_results(data, "s2-bp4d-fold1") - s2_before) == 1  # the cut stage 2, done
