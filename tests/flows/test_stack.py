"""`clef stack` port choice and `clef reproduce`'s check of its parameters (no services);
the local stack authenticated (one stack for the module, started and stopped by PID): its
secret is its owner's alone (mode 0600 from creation), Ray's job API runs nothing without it
(the POST of issue 31) and runs the job with it, Prefect takes no write and MLflow lets no
one in without it, CORS grants only each UI's own origin, and the docs' `ray job submit`,
`prefect` and MLflow client lines work in a shell set up by `clef stack env`."""

from __future__ import annotations

import json
import os
import shlex
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clef_core.common.errors import ClefError
from flows.ports import Ports, choose_ports, parse_ports, port_free
from flows.stack import down, status, up
from flows.stack_auth import auth_headers, make_secret, read_secret, secret_path
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_ports_are_free_distinct_and_asked_ones_kept() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(ClefError, match=f"mlflow={taken} is in use"):
            choose_ports({"mlflow": taken})
        chosen = choose_ports()
        values = list(vars(chosen).values())
        assert len(set(values)) == len(values) and taken not in values
        assert all(port_free(p) for p in values)
        # Defaults where free: whichever default is busy on this machine was replaced.
        defaults = Ports()
        for name in Ports.names():
            default = getattr(defaults, name)
            assert getattr(chosen, name) == default or not port_free(default)
    with pytest.raises(ClefError, match="unknown port name grafana"):
        choose_ports({"grafana": 3000})
    assert parse_ports(["mlflow=5001", "ray_client=10002"]) == {"mlflow": 5001, "ray_client": 10002}
    with pytest.raises(ClefError, match="expected --port NAME=PORT"):
        parse_ports(["mlflow:5001"])


def test_reproduce_with_a_bad_root_prints_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "no-such-BP4D"
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "reproduce", "--no-synthetic", "--dataset", "bp4d",
         "--root", f"bp4d={bad}", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2
    assert lines == [f"error: bp4d: dataset root {bad} does not exist"], lines


# --- The local stack authenticated (issue 31): one stack for the tests below, by PID. ---


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Ports, str]]:
    """`clef stack up` on ports free now, its secret; `down` after the module."""
    data = tmp_path_factory.mktemp("stack") / "data"
    ports = choose_ports({name: _free_port() for name in Ports.names()})
    try:
        up(data, ports)
        yield data, ports, read_secret(data)
    finally:
        down(data)
    assert status(data) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(
    url: str, body: dict | None = None, headers: dict[str, str] | None = None, method: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; an HTTP error is an answer, not an exception."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data, {"Content-Type": "application/json", **(headers or {})}, method=method or None
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def _shell(data: Path, command: str) -> subprocess.CompletedProcess:
    """`command` in a shell that ran the docs' `eval "$(clef stack env)"` (nothing else of
    the stack in its environment)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PREFECT_API", "MLFLOW_"))
    }
    env["PATH"] = f"{BIN}:{env['PATH']}"
    script = f'eval "$(clef stack env --data-dir {shlex.quote(str(data))})" && {command}'
    return subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.server
def test_the_secret_is_the_owners_alone(stack: tuple[Path, Ports, str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    data, _, secret = stack
    info = secret_path(data).lstat()
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid() and len(secret) >= 40
    # Created with its mode (never chmod-ed after the secret is in it), even under umask 0.
    opened: list[tuple[int, int]] = []
    real_open = os.open
    monkeypatch.setattr(
        os, "open", lambda p, f, m=0o777: opened.append((f, m)) or real_open(p, f, m)
    )
    monkeypatch.setattr(os, "chmod", lambda *a, **k: pytest.fail("chmod of the secret"))
    old = os.umask(0)
    try:
        other = make_secret(tmp_path)
    finally:
        os.umask(old)
    assert opened == [(os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)]
    assert stat.S_IMODE(secret_path(tmp_path).stat().st_mode) == 0o600
    assert make_secret(tmp_path) == other != secret  # kept across `up`s; one per stack
    monkeypatch.undo()
    secret_path(tmp_path).chmod(0o644)  # someone widened it: refused, in one line
    with pytest.raises(ClefError, match=r"can be read by others \(mode 644\); expected 600"):
        read_secret(tmp_path)


@pytest.mark.server
def test_ray_job_api_runs_nothing_without_the_secret(stack: tuple[Path, Ports, str]) -> None:
    data, ports, secret = stack
    proof = data.parent / "proof.txt"
    job = {"entrypoint": f"id > {proof}"}  # the issue's POST
    url = f"http://127.0.0.1:{ports.ray_dashboard}/api/jobs/"
    assert _call(url, job)[0] == 401
    assert _call(url, job, {"Authorization": "Bearer not-the-secret"})[0] == 403
    assert _call(url, job, {"X-Ray-Authorization": "Bearer not-the-secret"})[0] == 403
    time.sleep(5)
    assert not proof.exists()
    code, _, body = _call(url, job, auth_headers("ray", secret))
    assert code == 200, body
    assert wait_for(proof.exists, 120), "the job with the token did not run"
    # The docs' `ray job submit` line, in a shell set up by `clef stack env`.
    done = _shell(data, 'ray job submit --address "$RAY_API_SERVER_ADDRESS" -- echo submitted-ok')
    assert done.returncode == 0 and "submitted-ok" in done.stdout + done.stderr, done.stderr[-2000:]


@pytest.mark.server
def test_prefect_takes_no_write_without_the_secret(stack: tuple[Path, Ports, str]) -> None:
    data, ports, secret = stack
    api = f"http://127.0.0.1:{ports.prefect}/api"
    assert _call(f"{api}/flows/filter", {})[0] == 401
    run = {"parameters": {"data_dir": "/tmp/elsewhere"}}  # the issue's caller-chosen data dir
    assert _call(f"{api}/deployments/{uuid.uuid4()}/create_flow_run", run)[0] == 401
    assert _call(f"{api}/flows/filter", {}, {"Authorization": "Basic Y2xlZjpub3Bl"})[0] == 401
    code, _, body = _call(f"{api}/flows/filter", {}, auth_headers("prefect", secret))
    assert code == 200 and "clef" in {f["name"] for f in json.loads(body)}
    # A web page of another origin gets no CORS grant; the UI's own origin does.
    evil = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    _, headers, _ = _call(f"{api}/flows/filter", headers=evil, method="OPTIONS")
    assert headers.get("access-control-allow-origin") in (None, f"http://127.0.0.1:{ports.prefect}")
    own = {**evil, "Origin": f"http://127.0.0.1:{ports.prefect}"}
    _, headers, _ = _call(f"{api}/flows/filter", headers=own, method="OPTIONS")
    assert headers.get("access-control-allow-origin") == f"http://127.0.0.1:{ports.prefect}"
    # The docs' `prefect` lines, in a shell set up by `clef stack env`.
    done = _shell(data, "prefect deployment ls")
    assert done.returncode == 0 and "clef/smoke" in done.stdout, done.stderr[-2000:]


@pytest.mark.server
def test_mlflow_lets_in_only_the_secret(stack: tuple[Path, Ports, str]) -> None:
    data, ports, secret = stack
    server = f"http://127.0.0.1:{ports.mlflow}"
    search = f"{server}/api/2.0/mlflow/experiments/search?max_results=5"
    assert _call(search)[0] == 401
    code, headers, _ = _call(f"{server}/")  # the UI: the browser asks for the user and secret
    assert code == 401 and headers.get("www-authenticate", "").startswith("Basic")
    assert _call(search, headers=auth_headers("mlflow", f"{secret}x"))[0] == 401
    assert _call(search, headers=auth_headers("mlflow", secret))[0] == 200
    assert _call(f"{server}/health")[0] == 200  # health stays open (checks, load balancers)
    evil = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    _, headers, _ = _call(search, headers=evil, method="OPTIONS")
    assert headers.get("access-control-allow-origin") in (None, server)
    # A client with the variables `clef stack env` exports logs a run.
    code = (
        "import mlflow; c = mlflow.MlflowClient(); e = c.create_experiment('clef-auth-check'); "
        "r = c.create_run(e); c.log_metric(r.info.run_id, 'm', 1.0); print('logged')"
    )
    done = _shell(data, f"python -c {shlex.quote(code)}")
    assert done.returncode == 0 and "logged" in done.stdout, done.stderr[-2000:]


@pytest.mark.server
def test_stack_status_and_submit_use_the_secret(stack: tuple[Path, Ports, str]) -> None:
    data, _, _ = stack
    rows = status(data)
    assert {s.name for s, alive, ok in rows if alive and ok} >= {"prefect", "mlflow", "ray"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    done = subprocess.run(
        [str(BIN / "clef"), "submit", "--data-dir", str(data), "--working-dir", str(REPO), "--",
         "config", "show", "cpu-tiny"],
        env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0 and "SUCCEEDED" in done.stdout + done.stderr, done.stderr[-2000:]
