"""`clef stack` port choice, a state file's PID that is now another process's never signalled,
a stack whose services all died coming back on its ports, one `clef stack` command at a time
(its lock), and `clef reproduce`'s check of its
parameters (no services);
the local stack authenticated (one stack for the module, started and stopped by PID): its
secret is its owner's alone (mode 0600 from creation), Ray's job API runs nothing without it
(the POST of issue 31) and runs the job with it, Prefect takes no write and MLflow lets no
one in without it, CORS grants only each UI's own origin, and the docs' `ray job submit`,
`prefect` and MLflow client lines work in a shell set up by `clef stack env`. Then, on the
same stack: MLflow killed during a real `clef finetune` (exit 0, checkpoint written, the
spool summary), `clef stack up` starting MLflow alone, `clef sync-tracking` delivering the
spool, `clef stack restart mlflow`; and an `up` that fails (MLflow's port taken) stopping
the Ray it started while Prefect keeps running."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
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

import psutil
import pytest

from clef_core.common.errors import ClefError
from clef_core.tracking.spool import pending, spool_dir
from flows.ports import Ports, choose_ports, parse_ports, port_free
from flows.stack import down, read_state, status, up
from flows.stack_auth import auth_headers, client_env, make_secret, read_secret, secret_path
from flows.stack_process import Service, boot_id, foreign, running, save_state, start_ticks
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


def _sleeper() -> subprocess.Popen:
    """A throwaway process in a session of its own: the PID a test's state file names, so that
    a regression signals this process's group, never pytest's."""
    return subprocess.Popen(["sleep", "600"], start_new_session=True)  # outlives a slow test


def _as_service(name: str, proc: subprocess.Popen, **identity: object) -> Service:
    """A service record for `proc`, its identity recorded (or as given in `identity`)."""
    found = {"start_ticks": start_ticks(proc.pid), "boot_id": boot_id(), **identity}
    health = f"http://127.0.0.1:{_free_port()}/"  # nothing answers there
    return Service(name, proc.pid, "", health, "", **found)  # type: ignore[arg-type]


def _end(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=30)


def test_up_on_a_running_stack_keeps_its_ports(tmp_path: Path) -> None:
    """A stack that runs (here: a state file whose service is a live process of this test) is
    not moved: other ports are refused in one line before anything starts."""
    from flows.stack import restart

    ports = Ports(prefect=_free_port())
    (tmp_path / "stack").mkdir()
    sleeper = _sleeper()
    try:
        save_state(tmp_path, [_as_service("prefect", sleeper)], ports)
        with pytest.raises(
            ClefError, match=f"runs on mlflow={ports.mlflow}: `clef stack down` first"
        ):
            up(tmp_path, asked={"mlflow": ports.mlflow + 1}, timeout=1)
        with pytest.raises(ClefError, match=f"runs on prefect={ports.prefect}"):
            up(tmp_path, Ports(), timeout=1)
        with pytest.raises(ClefError, match="unknown service 'grafana'; expected prefect, mlflow"):
            restart(tmp_path, "grafana")
        assert _pids(tmp_path) == {"prefect": sleeper.pid}  # nothing started, nothing stopped
        assert sleeper.poll() is None
    finally:
        _end(sleeper)


def test_one_stack_command_at_a_time(tmp_path: Path) -> None:
    """While one process changes a stack (holds its lock), another's `clef stack up`, `down`
    and `restart` each stop with one line naming the holder and start or stop nothing; once
    the holder has ended, `down` goes ahead."""
    from flows.stack import restart
    from flows.stack_process import exclusive

    ports = Ports(prefect=_free_port())
    (tmp_path / "stack").mkdir()
    sleeper = _sleeper()
    try:
        save_state(tmp_path, [_as_service("prefect", sleeper)], ports)
        holder = f"another `clef stack` command \\(pid {os.getpid()}\\)"
        with exclusive(tmp_path):
            done = _clef(["stack", "up", "--data-dir", str(tmp_path)])
            lines = (done.stdout + done.stderr).strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1, lines
            assert re.search(holder, lines[0]), lines
            with pytest.raises(ClefError, match=holder):
                down(tmp_path)
            with pytest.raises(ClefError, match=holder):
                restart(tmp_path, "prefect")  # a lock is per open file: this process too
            assert _pids(tmp_path) == {"prefect": sleeper.pid} and sleeper.poll() is None
        assert down(tmp_path) == ["prefect"]  # the lock went with its holder's `with`
        assert sleeper.wait(10) is not None
    finally:
        _end(sleeper)
    # A link planted where the lock goes is not followed (nor its target written): one line.
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "stack" / "lock").unlink()
    (tmp_path / "stack" / "lock").symlink_to(target)
    with pytest.raises(ClefError, match=r"cannot open the stack's lock .*expected a file"):
        up(tmp_path, timeout=1)
    assert target.read_text() == "keep"


def test_a_pid_now_another_process_s_is_never_signalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state file from another boot, or whose PID is now a process started later (its start
    time differs): `status` shows the service down, and `down`, `up` and `restart` send that
    PID's process group nothing. A service recorded without its identity (an older state
    file) is known by its PID alone, as before."""
    import flows.stack as stack_module
    from flows.stack import restart

    def no_launch(*args: object) -> Service:
        raise ClefError("no service started in this test")

    monkeypatch.setattr(stack_module, "_launch", no_launch)
    (tmp_path / "stack").mkdir()
    ports = choose_ports({name: _free_port() for name in Ports.names()})
    sleeper = _sleeper()
    try:
        ticks = start_ticks(sleeper.pid)
        assert ticks is not None
        old = _as_service("prefect", sleeper, start_ticks=None, boot_id=None)
        assert running(old) and not foreign(old)
        for other in ({"start_ticks": ticks + 1}, {"boot_id": "another-boot"}):
            save_state(tmp_path, [_as_service("prefect", sleeper, **other)], ports)
            [(_, alive, _)] = status(tmp_path)
            assert alive is False
            with pytest.raises(ClefError, match="no service started in this test"):
                up(tmp_path, timeout=1)
            save_state(tmp_path, [_as_service("prefect", sleeper, **other)], ports)
            with pytest.raises(ClefError, match="no service started in this test"):
                restart(tmp_path, "prefect")
            assert down(tmp_path) == []
            time.sleep(0.5)
            assert sleeper.poll() is None, f"{other}: the sleeper was signalled"
    finally:
        _end(sleeper)
    # The start time read after the command name's last ')': a name with spaces and parens.
    odd = tmp_path / "s) (x y"
    odd.symlink_to(shutil.which("sleep") or "/bin/sleep")
    named = subprocess.Popen([str(odd), "60"], start_new_session=True)
    try:
        ticks = start_ticks(named.pid)
        assert ticks is not None
        since_boot = psutil.Process(named.pid).create_time() - psutil.boot_time()
        assert abs(ticks / os.sysconf("SC_CLK_TCK") - since_boot) < 2
    finally:
        _end(named)


def test_a_stack_whose_services_all_died_comes_back_on_its_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every service gone, one leaving a child in its group that holds its port: `up` stops
    that leftover first and starts on the stack's ports (where its exports and spooled URIs
    point), not on new ones."""
    import flows.stack as stack_module

    ports = choose_ports({name: _free_port() for name in Ports.names()})
    holder = (
        "import socket, time; s = socket.socket(); "
        f"s.bind(('127.0.0.1', {ports.mlflow})); s.listen(); time.sleep(60)"
    )
    # The leader exits at once; its child, in the leader's group, keeps MLflow's port.
    leader = subprocess.Popen(
        ["bash", "-c", f"{shlex.quote(sys.executable)} -c {shlex.quote(holder)} & sleep 1"],
        start_new_session=True,
    )
    record = _as_service("mlflow", leader)
    leader.wait(timeout=30)
    assert wait_for(lambda: _listening(ports.mlflow), 30)
    (tmp_path / "stack").mkdir()
    save_state(tmp_path, [record], ports)
    used: list[Ports] = []

    def start_none(data_dir: Path, on: Ports, *args: object) -> None:
        used.append(on)
        raise ClefError("no service started in this test")

    monkeypatch.setattr(stack_module, "_start_missing", start_none)
    try:
        with pytest.raises(ClefError, match="no service started in this test"):
            up(tmp_path, timeout=1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
    assert used == [ports]
    assert not _group_alive(leader.pid)


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


# --- `clef stack up` starts what is missing and leaves the rest; a failed `up` stops what it
# started; a training command outlives its MLflow server (issue 31). On the module's stack. ---


def _clef(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "clef"), *args], env=env, capture_output=True, text=True, timeout=600
    )


def _pids(data: Path) -> dict[str, int]:
    return {s.name: s.pid for s in read_state(data)}


def _kill_group(pid: int) -> None:
    """SIGKILL to a service's process group (its PID leads it): an outage, not a stop."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    assert wait_for(lambda: not _group_alive(pid), 30), f"group {pid} outlived SIGKILL"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # Our own children that exited linger as zombies until reaped: not alive.
    return any(p.status() != psutil.STATUS_ZOMBIE for p in _group(pgid))


def _group(pgid: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(p.pid) == pgid:
                found.append(p)
    return found


def _listening(port: int) -> bool:
    """Something listens on 127.0.0.1:`port` (a server's SO_REUSEADDR bind would fail; the
    connections a killed server leaves in TIME_WAIT do not count, as they do for a bind)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _answers_only_with_the_secret(ports: Ports, secret: str) -> bool:
    search = f"http://127.0.0.1:{ports.mlflow}/api/2.0/mlflow/experiments/search?max_results=5"
    return (
        _call(search)[0] == 401 and _call(search, headers=auth_headers("mlflow", secret))[0] == 200
    )


def _runs(ports: Ports, secret: str, experiment: str) -> list[dict]:
    """Every run of `experiment` in the stack's MLflow (name, status, metric keys)."""
    api = f"http://127.0.0.1:{ports.mlflow}/api/2.0/mlflow"
    headers = auth_headers("mlflow", secret)
    _, _, body = _call(
        f"{api}/experiments/get-by-name?experiment_name={experiment}", headers=headers
    )
    found = json.loads(body)["experiment"]["experiment_id"]
    _, _, body = _call(f"{api}/runs/search", {"experiment_ids": [found]}, headers)
    return json.loads(body).get("runs", [])


@pytest.mark.slow
@pytest.mark.server
def test_mlflow_killed_during_finetune_then_up_starts_it_alone(
    stack: tuple[Path, Ports, str], shard_dir: Path, tmp_path: Path
) -> None:
    """The issue's run: MLflow killed during `clef finetune` -> exit 0, checkpoint written,
    the spool summary printed; `clef stack up` starts MLflow again and leaves the rest;
    `clef sync-tracking` delivers what was spooled; `clef stack restart mlflow` keeps the
    store."""
    data, ports, secret = stack
    before = _pids(data)
    train = tmp_path / "train"
    train.mkdir()
    os.symlink(shard_dir, train / "shards")
    uri = f"http://127.0.0.1:{ports.mlflow}"
    # Trained on the stack's Ray head (a cluster by address), as `clef stack env` sets it up.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_"))}
    env.update(client_env(data, secret))
    env.update({"RAY_ADDRESS": f"127.0.0.1:{ports.ray}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    # Stage 2 alone: the reproduction's parent run and the unit's are the two that log, both
    # made before the kill (a unit that starts while MLflow is down goes on without a run:
    # tests/training/test_heldout.py).
    steps = ["stage1.epochs=0", "stage2.epochs=1", "stage2.steps_per_epoch=2", "stage2.batch_size=8"]  # fmt: skip
    sets = [a for o in steps for a in ("--set", o)]
    log = tmp_path / "finetune.log"
    with log.open("w") as out:
        run = subprocess.Popen(
            [str(BIN / "clef"), "finetune", "--dataset", "bp4d", "--fold", "1", "--preset",
             "cpu-tiny", *sets, "--data-dir", str(train), "--mlflow-uri", uri],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        # Two runs logging (the reproduction's parent and stage 2's): both exist in MLflow,
        # and what they log from now on can only be spooled.
        spool = spool_dir(train)
        logging = lambda: len({p.name.split(".")[0] for p in spool.glob("*.jsonl")}) >= 2  # noqa: E731
        assert wait_for(lambda: logging() or run.poll() is not None, 300), log.read_text()[-3000:]
        assert run.poll() is None, f"finetune ended before the kill: {log.read_text()[-3000:]}"
        _kill_group(before["mlflow"])
        run.wait(timeout=600)
    printed = log.read_text()
    flat = " ".join(printed.split())  # rich wraps long lines
    assert run.returncode == 0 and "Traceback" not in printed, printed[-3000:]
    assert f"warning: MLflow at {uri} did not answer" in flat, printed[-3000:]
    assert f"are not in {uri} yet" in flat and f"clef sync-tracking --data-dir {train}" in flat
    checkpoint = next(line for line in printed.splitlines() if line.startswith("s2-bp4d-fold1: "))
    assert (Path(checkpoint.split(": ", 1)[1]) / "checkpoint" / "model.pt").is_file(), checkpoint

    # `clef stack up` again: MLflow started, the others left running with their PIDs.
    done = _clef(["stack", "up", "--data-dir", str(data)], env)
    assert done.returncode == 0, done.stdout + done.stderr
    after = _pids(data)
    assert {k: after[k] for k in ("prefect", "ray", "deployments")} == {
        k: before[k] for k in ("prefect", "ray", "deployments")}  # fmt: skip
    assert after["mlflow"] != before["mlflow"]
    said = [" ".join(line.split()[:2]) for line in done.stdout.splitlines()[:4]]
    assert said == ["running prefect", "started mlflow", "running ray", "running deployments"]
    assert _answers_only_with_the_secret(ports, secret)
    assert [r for r in _runs(ports, secret, "clef-bp4d") if r["info"]["status"] == "RUNNING"]

    # What was spooled goes in now; every run of the finetune ends FINISHED.
    done = _clef(["sync-tracking", "--data-dir", str(train)], env)
    assert done.returncode == 0 and "every spooled tracking call is in MLflow" in done.stdout
    assert pending(spool) == {}
    runs = _runs(ports, secret, "clef-bp4d")
    assert runs and {r["info"]["status"] for r in runs} == {"FINISHED"}, runs

    # One service restarted by name: a new process on the same store, the others untouched.
    done = _clef(["stack", "restart", "mlflow", "--data-dir", str(data)], env)
    assert done.returncode == 0 and done.stdout.startswith("restarted mlflow"), done.stderr
    again = _pids(data)
    assert again["mlflow"] != after["mlflow"] and not _group_alive(after["mlflow"])
    assert {k: again[k] for k in ("prefect", "ray", "deployments")} == {
        k: before[k] for k in ("prefect", "ray", "deployments")}  # fmt: skip
    assert _answers_only_with_the_secret(ports, secret)
    assert len(_runs(ports, secret, "clef-bp4d")) == len(runs)


@pytest.mark.server
def test_an_up_that_fails_stops_what_it_started(stack: tuple[Path, Ports, str]) -> None:
    """MLflow and Ray gone, MLflow's port taken by someone else: `clef stack up` starts both,
    MLflow cannot bind, and the Ray it started is stopped again (one line, exit 2); Prefect
    and the deployment server keep running. With the port free, `up` brings both back."""
    data, ports, secret = stack
    before = _pids(data)
    _kill_group(before["mlflow"])
    _kill_group(before["ray"])
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        squatter.bind(("127.0.0.1", ports.mlflow))
        squatter.listen()
        done = _clef(["stack", "up", "--data-dir", str(data)])
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: mlflow exited during start-up"), lines
    started = dict(re.findall(r"(\w+) \(pid (\d+)\)", lines[0].split("stopped what")[1]))
    assert set(started) == {"mlflow", "ray"}, lines
    assert not [n for n, pid in started.items() if _group_alive(int(pid))]  # nothing left
    assert not _listening(ports.ray) and not _listening(ports.ray_dashboard)
    assert _pids(data) == before  # the state as it was: MLflow and Ray shown down
    rows = {s.name: (alive, ok) for s, alive, ok in status(data)}
    assert rows["prefect"] == rows["deployments"] == (True, True)
    assert rows["mlflow"][0] is False and rows["ray"][0] is False

    done = _clef(["stack", "up", "--data-dir", str(data)])
    assert done.returncode == 0, done.stdout + done.stderr
    after = _pids(data)
    assert (after["prefect"], after["deployments"]) == (before["prefect"], before["deployments"])
    assert _answers_only_with_the_secret(ports, secret)
    jobs = f"http://127.0.0.1:{ports.ray_dashboard}/api/jobs/"
    assert _call(jobs)[0] == 401 and _call(jobs, headers=auth_headers("ray", secret))[0] == 200
