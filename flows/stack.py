"""`clef stack up | status | down`: the local services for the real commands, on 127.0.0.1.

- a Prefect server (SQLite under the data dir),
- an MLflow server with its UI (SQLite store + artifacts under the data dir),
- a single-node Ray head (dashboard and job API; every Ray port on 127.0.0.1, see
  `clef_core.common.runtime.LOOPBACK_RAY_ENV`),
- a process serving the `clef/full-reproduction` and `clef/smoke` deployments, wired to the
  three above.
Each requires the stack's secret (`flows.stack_auth`: Ray's token authentication, Prefect's
and MLflow's basic auth), which `up` makes once, readable by its owner only.
Ports: the defaults below where they are free, any other free port where not (printed, kept in
the state file, shown by `clef stack status` and `clef stack env`), or the ones asked for.
Each runs in its own session; their PIDs go to `<data_dir>/stack/stack.json` with each
process's start time and the boot id, and `down` stops exactly those process groups (never
`ray stop`, which would stop every Ray on the machine); a PID that belongs to another process
now (after a reboot, or reused) counts as stopped and is sent nothing.
The serving process is stopped first, with SIGINT: it ignores SIGTERM once its server is gone.
`up` on a stack that runs starts only what is missing (killed, crashed), on the stack's ports
and stores, and leaves the running services alone; a stack none of whose services runs comes
back on its ports where they are free. An `up` that fails stops again what it started (and
only that: what ran before keeps running). `restart` stops one service and starts it again;
`start_again` starts one that stopped.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from clef_core.common.errors import ClefError
from clef_core.common.runtime import LOOPBACK_RAY_ENV, SINGLE_NODE_TRAIN_ENV, local_cpus
from flows.ports import HOST, Ports, choose_ports, port_free
from flows.stack_auth import (
    auth_headers,
    client_env,
    make_secret,
    mlflow_args,
    read_secret,
    secret_path,
    server_env,
    service_env,
)
from flows.stack_process import (
    Service,
    bin_path,
    exclusive,
    healthy,
    read_ports,
    read_state,
    running,
    save_state,
    start,
    state_file,
    stop,
    wait_for_deployments,
    wait_healthy,
)


def ray_temp_dir(data_dir: Path) -> Path:
    """A Ray temp dir of this stack's own ($RAY_TMPDIR or /tmp, one per data dir), so that a
    driver started here never finds another cluster's session; kept short for Ray's sockets."""
    tag = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return Path(os.environ.get("RAY_TMPDIR") or "/tmp") / f"clef-{os.getuid()}-{tag}"


def _base_env(data_dir: Path) -> dict[str, str]:
    """The services' environment: Prefect's home under the data dir, no outside cluster, Ray
    in single-node mode with this stack's token (the caller's own token is not this stack's)."""
    base = {**SINGLE_NODE_TRAIN_ENV, **os.environ, "PREFECT_HOME": str(data_dir / "prefect")}
    for key in ("PREFECT_API_URL", "RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        base.pop(key, None)  # RAY_ADDRESS: the head must not join a cluster named there
    base.update(LOOPBACK_RAY_ENV)
    base.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(secret_path(data_dir))})
    return base


def _launch(name: str, data_dir: Path, ports: Ports, secret: str) -> Service:
    """Start one service of the stack of `data_dir` on its ports (not waiting for it)."""
    folder = data_dir / "stack"
    base = {**_base_env(data_dir), **server_env(name, data_dir, ports, secret)}
    if name == "prefect":
        return start("prefect", [bin_path("prefect"), "server", "start", "--host", HOST, "--port", str(ports.prefect)],
                      base, f"http://{HOST}:{ports.prefect}", f"http://{HOST}:{ports.prefect}/api/health", folder)  # fmt: skip
    if name == "mlflow":
        return start("mlflow", [bin_path("mlflow"), "server", "--host", HOST, "--port", str(ports.mlflow),
                                 "--backend-store-uri", f"sqlite:///{data_dir / 'mlflow-server.db'}",
                                 "--artifacts-destination", str(data_dir / "mlflow-artifacts"),
                                 *mlflow_args(ports)],
                      base, f"http://{HOST}:{ports.mlflow}", f"http://{HOST}:{ports.mlflow}/health", folder)  # fmt: skip
    if name == "ray":
        return start("ray", [bin_path("ray"), "start", "--head", "--block", "--node-ip-address", HOST,
                              "--port", str(ports.ray), "--dashboard-host", HOST,
                              "--dashboard-port", str(ports.ray_dashboard),
                              "--ray-client-server-port", str(ports.ray_client),
                              "--dashboard-agent-listen-port", str(ports.ray_agent),
                              "--num-cpus", str(local_cpus()),
                              "--temp-dir", str(ray_temp_dir(data_dir))],
                      base, f"http://{HOST}:{ports.ray_dashboard}", f"http://{HOST}:{ports.ray_dashboard}/api/version", folder)  # fmt: skip
    if name == "deployments":
        serve_env = {**base, **service_env(data_dir, ports), **client_env(data_dir, secret)}
        return start("deployments", [sys.executable, "-m", "flows.serve"], serve_env,
                      f"http://{HOST}:{ports.prefect}/deployments",
                      f"http://{HOST}:{ports.prefect}/api/health", folder)  # fmt: skip
    raise ClefError(f"unknown service {name!r}; expected prefect, mlflow, ray or deployments")


SERVICES = ("prefect", "mlflow", "ray", "deployments")  # start order; the server last


def up(
    data_dir: Path,
    ports: Ports | None = None,
    timeout: float = 180,
    asked: dict[str, int] | None = None,
) -> list[Service]:
    """Start the services of the stack of `data_dir` that are not running, wait until each
    answers, and return all four (in `SERVICES` order). A stack that runs keeps its ports and
    secret, and its running services are left alone; `ports` (all) or `asked` (some, by name)
    that differ from its ports are refused. If a service does not come up, every service this
    call started is stopped again and one error says which. One `up`, `down` or `restart` of a
    stack at a time (`exclusive`)."""
    data_dir = data_dir.resolve()
    with exclusive(data_dir):
        return _up(data_dir, ports, timeout, asked or {})


def _up(
    data_dir: Path, ports: Ports | None, timeout: float, asked: dict[str, int]
) -> list[Service]:
    state = read_state(data_dir)
    kept = [s for s in state if running(s)]
    # A killed leader's children (MLflow's uvicorn, Ray's raylet) hold its ports: stopped
    # before the ports are chosen, so that a stack whose services all died keeps its ports.
    for s in state:
        if s not in kept:
            stop(s)
    ports = _stack_ports(data_dir, kept, ports, asked)
    # The running services check the secret they started with: a new one would lock them out.
    secret = read_secret(data_dir) if kept else make_secret(data_dir)
    started: list[Service] = []
    try:
        _start_missing(data_dir, ports, secret, kept, started, timeout)
    except BaseException as err:
        _roll_back(data_dir, ports, state, started)
        if isinstance(err, ClefError) and started:
            stopped = ", ".join(f"{s.name} (pid {s.pid})" for s in started)
            raise ClefError(f"{err}; stopped what this `up` started: {stopped}") from None
        raise
    by_name = {s.name: s for s in [*kept, *started]}
    return [by_name[name] for name in SERVICES]


def _stack_ports(
    data_dir: Path, kept: list[Service], ports: Ports | None, asked: dict[str, int]
) -> Ports:
    """The ports to start on: a running stack's own; else the stopped stack's own where all
    are free and agree with `ports` / `asked` (the URIs exported and spooled point there);
    else `ports`, else chosen (`asked` kept)."""
    saved = read_ports(data_dir)
    wanted = asdict(ports) if ports is not None else asked
    if not kept:
        if (
            saved is not None
            and all(getattr(saved, k, None) == v for k, v in wanted.items())
            and _all_free(saved)
        ):
            return saved
        return ports or choose_ports(asked)
    if saved is None:
        raise ClefError(f"the stack of {data_dir} has no ports in {state_file(data_dir)}: "
                        "`clef stack down` first")  # fmt: skip
    other = {k: v for k, v in wanted.items() if getattr(saved, k) != v}
    if other:
        theirs = ", ".join(f"{k}={getattr(saved, k)}" for k in other)
        raise ClefError(f"the stack of {data_dir} runs on {theirs}: `clef stack down` first "
                        "to move it to other ports")  # fmt: skip
    return saved


def _all_free(ports: Ports, wait: float = 5) -> bool:
    """Every port of `ports` can be bound, waiting `wait` s at most for the leftovers of a
    stopped stack (just sent SIGKILL) to let go; TIME_WAIT connections do not count (the
    servers bind with SO_REUSEADDR)."""
    deadline = time.monotonic() + wait
    while not all(port_free(p, reuse_addr=True) for p in asdict(ports).values()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)
    return True


def _start_missing(
    data_dir: Path,
    ports: Ports,
    secret: str,
    kept: list[Service],
    started: list[Service],
    timeout: float,
) -> None:
    """Launch each service not in `kept`, appending it to `started` as soon as it has a PID
    (so that a failure later in this call can stop it), and wait for every one to answer."""
    present = {s.name for s in kept}
    for name in SERVICES[:3]:  # the servers start together: their start-ups overlap
        if name not in present:
            started.append(_launch(name, data_dir, ports, secret))
    save_state(data_dir, [*kept, *started], ports)  # a killed `up` leaves its PIDs for `down`
    for s in [*kept, *started]:
        if s.name in SERVICES[:3]:
            wait_healthy(
                s, timeout, secret, fix="" if s in started else f"`clef stack restart {s.name}`"
            )
    if "deployments" not in present:  # it registers with Prefect: once the servers answer
        serve = _launch("deployments", data_dir, ports, secret)
        started.append(serve)
        save_state(data_dir, [*kept, *started], ports)
        wait_for_deployments(ports, serve, timeout, secret)


def _roll_back(data_dir: Path, ports: Ports, state: list[Service], started: list[Service]) -> None:
    """Stop what a failed `up` started; the state file goes back to what it was before (the
    stopped services there shown as down), or away when none of them runs."""
    for s in _stop_order(started):
        stop(s)
    if any(running(s) for s in state):
        save_state(data_dir, state, ports)
    else:
        state_file(data_dir).unlink(missing_ok=True)


def _stop_order(services: list[Service]) -> list[Service]:
    """The deployment server first: once its Prefect server is gone it ignores SIGTERM."""
    return sorted(services, key=lambda s: s.name != "deployments")


def restart(data_dir: Path, name: str, timeout: float = 180) -> Service:
    """Stop the service `name` of the stack of `data_dir` (if it runs) and start it again on
    its port and with its store; the others keep running."""
    if name not in SERVICES:
        raise ClefError(f"unknown service {name!r}; expected {', '.join(SERVICES)}")
    data_dir = data_dir.resolve()
    with exclusive(data_dir):
        stop(_service(read_state(data_dir), name, data_dir))
        return _start_again(data_dir, name, timeout)


def _service(services: list[Service], name: str, data_dir: Path) -> Service:
    found = next((s for s in services if s.name == name), None)
    if found is None:
        raise ClefError(f"no {name} service in a stack of {data_dir}: `clef stack up` first")
    return found


def start_again(data_dir: Path, name: str, timeout: float = 180) -> Service:
    """Start one service of the running stack of `data_dir` that has stopped (killed,
    crashed) again, on its port and with its store, and wait for it; its new PID replaces
    the old one in the state file, so `down` stops it. Refuses one that is still alive; one
    that does not come up is stopped again (the state file keeps its PID, which is gone)."""
    data_dir = data_dir.resolve()
    with exclusive(data_dir):
        return _start_again(data_dir, name, timeout)


def _start_again(data_dir: Path, name: str, timeout: float) -> Service:
    services = read_state(data_dir)
    old = _service(services, name, data_dir)
    ports = read_ports(data_dir)
    if ports is None:
        raise ClefError(f"no {name} service in a stack of {data_dir}: `clef stack up` first")
    if running(old):
        raise ClefError(f"{name} (pid {old.pid}) is still running")
    stop(old)  # what is left of its process group would hold its port
    secret = read_secret(data_dir)
    new = _launch(name, data_dir, ports, secret)
    save_state(data_dir, [new if s.name == name else s for s in services], ports)
    try:
        if name == "deployments":
            wait_for_deployments(ports, new, timeout, secret)
        else:
            wait_healthy(new, timeout, secret)
    except BaseException:
        stop(new)
        raise
    return new


def down(data_dir: Path, timeout: float = 30) -> list[str]:
    """Stop what `up` started, the deployment server first; returns the names stopped."""
    data_dir = data_dir.resolve()
    if not state_file(data_dir).exists():
        return []  # no stack: nothing to lock (nor a folder to make)
    with exclusive(data_dir):
        stopped = [s.name for s in _stop_order(read_state(data_dir)) if stop(s, timeout)]
        state_file(data_dir).unlink(missing_ok=True)
    return stopped


def status(data_dir: Path) -> list[tuple[Service, bool, bool]]:
    """(service, process alive, answering) for each service of the stack."""
    data_dir = data_dir.resolve()
    services = read_state(data_dir)
    # A stack without its secret file (removed by hand) shows its Ray head as not answering.
    secret = read_secret(data_dir) if secret_path(data_dir).exists() else ""
    return [(s, running(s), healthy(s.health, auth_headers(s.name, secret))) for s in services]
