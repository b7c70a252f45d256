"""One service of the local stack (`flows.stack`) as a process: started in its own session
(its log beside it), its health checked (the deployment server's: its deployments registered),
stopped as a whole process group; and the stack's state file (`<data_dir>/stack/stack.json`: each service's PID, URL and log, the ports).

A PID in the state file can outlive its process (a reboot, a long time): each service also
records its process's start time and the boot id, and a PID whose process is not that one is
someone else's, never taken for the service nor signalled (`running`, `foreign`, `stop`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from clef_core.common.errors import ClefError
from flows.ports import HOST, Ports
from flows.stack_auth import auth_headers


@dataclass
class Service:
    name: str
    pid: int
    url: str
    health: str  # URL that answers 200 when the service is up
    log: str
    # The identity of the process `pid` was at its start: its start time (clock ticks after
    # boot, field 22 of /proc/PID/stat) and the boot id. None in a state file written before
    # they were recorded: such a service is known by its PID alone, as it was then (that file
    # was written by a stack that ran with it; taking its services for dead would start a
    # second stack beside them, on the same stores).
    start_ticks: int | None = None
    boot_id: str | None = None


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _stat(pid: int) -> list[str] | None:
    """Fields 3 onwards (the state first) of /proc/PID/stat, None without the process. Its
    command name (field 2, in parentheses) can hold spaces and parentheses: the fields are
    those after the last ')'."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 1 :].split()


def start_ticks(pid: int) -> int | None:
    """When the process `pid` started (clock ticks after boot, field 22), None if there is
    none."""
    fields = _stat(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def foreign(s: Service) -> bool:
    """The PID of `s` (or its process group) is not the service's: the state file is from
    another boot, or a process with that PID runs now with another start time. Then nothing
    of that PID's group is ours: a group's id is never given to a new process while any
    member of the group lives, so a reused PID means our group is gone. False for a service
    whose identity was not recorded (known by its PID alone)."""
    if s.start_ticks is None or s.boot_id is None:
        return False
    if boot_id() != s.boot_id:
        return True
    now = start_ticks(s.pid)
    return now is not None and now != s.start_ticks


def running(s: Service) -> bool:
    """The process `s` started is alive (its PID not reused by another since)."""
    return alive(s.pid) and not foreign(s)


def bin_path(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def healthy(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=2
        ) as r:
            return r.status == 200
    except OSError:
        return False


def start(
    name: str, cmd: list[str], env: dict[str, str], url: str, health: str, folder: Path
) -> Service:
    log = folder / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=folder,
        )  # fmt: skip
    # Read at once: the child cannot be reaped (and its PID reused) before we wait for it.
    return Service(name, proc.pid, url, health, str(log), start_ticks(proc.pid), boot_id())


def wait_healthy(service: Service, timeout: float, secret: str, fix: str = "") -> None:
    """Until `service` answers its health check; `fix`: what to do if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(service.health, auth_headers(service.name, secret)):
            return
        if not running(service):
            raise ClefError(f"{service.name} exited during start-up; see {service.log}")
        time.sleep(0.5)
    raise ClefError(
        f"{service.name} (pid {service.pid}) did not answer at {service.health} within "
        f"{timeout:.0f} s; see {service.log}" + (f"; {fix}" if fix else "")
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    fields = _stat(pid)  # a zombie child (our own, not yet reaped) is not alive
    return not fields or fields[0] != "Z"


def state_file(data_dir: Path) -> Path:
    return data_dir / "stack" / "stack.json"


@contextlib.contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Hold `<data_dir>/stack/lock` while a command changes the stack (`up`, `down`,
    `restart`): two `up`s at once would each start the missing services and each write the
    state file, leaving one's processes unknown to `down`. The second gets one error naming
    the first's PID; the lock goes with the holding process, however it ends. Opened without
    following a link, so a link planted in the folder redirects no write."""
    folder = data_dir / "stack"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as err:  # a link (ELOOP), a folder, no permission
        raise ClefError(
            f"cannot open the stack's lock {folder / 'lock'} (expected a file of yours): "
            f"{err.strerror}"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ClefError(
                f"another `clef stack` command (pid {holder}) is changing the stack of "
                f"{data_dir}: run this one when it has ended"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_state(data_dir: Path) -> list[Service]:
    path = state_file(data_dir)
    if not path.is_file():
        return []
    return [Service(**s) for s in json.loads(path.read_text())["services"]]


def read_ports(data_dir: Path) -> Ports | None:
    """The ports of the stack of `data_dir` (None when none was started)."""
    path = state_file(data_dir.resolve())
    if not path.is_file():
        return None
    saved = json.loads(path.read_text()).get("ports")
    return Ports(**saved) if saved else None


def save_state(data_dir: Path, services: list[Service], ports: Ports) -> None:
    state = {"services": [asdict(s) for s in services], "ports": asdict(ports)}
    state_file(data_dir).write_text(json.dumps(state, indent=1))


def stop(s: Service, timeout: float = 30) -> bool:
    """Stop the process group of `s`; False if its leader was not running. What is left of a
    group whose leader is gone (a server that exited during start-up) is killed too: a group's
    id is never given to a new process while any of its members lives. A PID that another
    process has now (`foreign`) gets no signal at all, nor does its group."""
    if foreign(s):
        return False
    if not alive(s.pid):
        signal_group(s.pid, signal.SIGKILL)
        return False
    first = signal.SIGINT if s.name in ("deployments", "ray") else signal.SIGTERM
    signal_group(s.pid, first)
    # `ray start --block` takes 30 s or more to stop its processes on a busy machine;
    # what is left of the group after a short wait is killed (its workers share the
    # raylet's fate).
    wait_gone(s, min(timeout, 10) if s.name == "ray" else timeout)
    if not foreign(s):  # its PID not reused while we waited
        signal_group(s.pid, signal.SIGKILL)  # whatever of the group is left
    wait_gone(s, 10)
    return True


def wait_gone(s: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while running(s) and time.monotonic() < deadline:
        time.sleep(0.3)


def signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):  # each service leads its own session: children go too
        os.killpg(pid, sig)


def wait_for_deployments(ports: Ports, serve: Service, timeout: float, secret: str) -> None:
    """Until the deployment server has registered its deployments: after it marked earlier
    runs Crashed (`flows.serve.crash_orphans`), and not merely found in the database by an
    earlier stack of the same data dir (their `updated` time is this start's)."""
    url = f"http://{HOST}:{ports.prefect}/api/deployments/name/clef/smoke"
    since = time.time() - 1  # the server's clock is this machine's; its stamps have µs
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        registered = registered_at(url, auth_headers("prefect", secret))
        if registered is not None and registered >= since:
            return
        if not running(serve):
            raise ClefError(f"the deployment server exited; see {serve.log}")
        time.sleep(1)
    raise ClefError(f"deployments not registered within {timeout:.0f} s; see {serve.log}")


def registered_at(url: str, headers: dict[str, str]) -> float | None:
    """When the deployment at `url` was last registered (its `updated`), None if not yet."""
    from datetime import datetime

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as r:
            updated = json.loads(r.read()).get("updated")
    except (OSError, ValueError):
        return None
    return datetime.fromisoformat(updated).timestamp() if updated else None
