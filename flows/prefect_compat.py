"""Where Prefect 3.8 needs help to show a run as it ended, each with its reason. The flow
(`flows/clef_flow.py`) calls these; nothing else does.

- `retry_on_io`: a task's retry condition. Prefect retries on any exception by default, so a
  bad config or a bug would run again; only I/O and Ray connection errors are retried.
- `settle`: waits for every task and names the first failure. The tasks that never ran
  because something upstream failed stay Pending/NotReady in Prefect, which the UI shows as
  still to come; they are set Cancelled.
- `cancel`: a task run reaches the server through its event stream, possibly after the flow
  asks to cancel it (404), so each cancel is retried for a while, best effort.
- `start_temporary_server`: two temporary servers migrating one new database at once
  collided; they start one at a time per Prefect home.
- `failed`: `prefect deployment run --watch` prints a run's events, not its state message nor
  its logs, so the cause of a failure also goes out as an event named by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture, wait
from prefect.states import Cancelled, Failed, State

from clef_core.common.errors import ClefError


def retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what a second try can fix: I/O and cluster connection errors."""
    try:
        state.result()
    except (OSError, ConnectionError, TimeoutError):
        return True
    except Exception as err:
        return type(err).__name__ in ("RaySystemError", "GetTimeoutError")
    return False


def settle(futures: dict[str, PrefectFuture]) -> str | None:
    """Wait for every task; None when all completed, else the first failure's own message.

    The tasks that never ran because something upstream failed end Pending/NotReady in
    Prefect; they are set to Cancelled here so that the UI shows them ended, not running on.
    """
    wait(list(futures.values()))
    cause = None
    for label, future in futures.items():  # submission order: upstream before downstream
        if future.state.is_failed():
            try:
                future.result()
            except ClefError as err:
                cause = str(err)
            except BaseException as err:
                cause = f"{label} failed: {type(err).__name__}: {err}"
            break
    if cause is None:
        return None
    cancel([f for f in futures.values() if not f.state.is_final()], f"not run: {cause}")
    return cause


def cancel(futures: list[PrefectFuture], message: str, patience: float = 20) -> None:
    """Set the tasks to Cancelled. Best effort: a task run reaches the server through its
    event stream, possibly after this asks (404), so each is retried for `patience` seconds;
    the flow's own message must survive whatever happens here."""
    import time

    from prefect import get_client

    deadline = time.monotonic() + patience
    with get_client(sync_client=True) as client:
        for future in futures:
            while True:
                try:
                    client.set_task_run_state(
                        future.task_run_id, Cancelled(message=message), force=True
                    )
                    break
                except Exception as err:  # ObjectNotFound / HTTP 404 until the run is known
                    if time.monotonic() > deadline:
                        get_run_logger().warning("could not cancel %s: %s", future.task_run_id, err)
                        break
                    time.sleep(0.5)


def failed(cause: str) -> State:
    """The run's end: Failed, with `cause` as its state message.

    `prefect deployment run --watch` prints the run's events, not its state message (nor,
    in 3.8, its logs): the cause also goes out as an event on the run, named by it, before
    the final state, so that the watch shows it as one line.
    """
    from prefect.context import FlowRunContext
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    get_run_logger().error(cause)
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        resource = {
            "prefect.resource.id": f"prefect.flow-run.{context.flow_run.id}",
            "prefect.resource.name": cause,
        }
        try:
            emit_event(event="clef.run.failed-because", resource=resource)
            EventsWorker.instance().wait_until_empty()
        except Exception as err:  # the state message below still says it
            get_run_logger().warning("could not send the cause as an event: %s", err)
    return Failed(message=cause)


def start_temporary_server() -> None:
    """Start this process's temporary Prefect server (no PREFECT_API_URL) one process at a
    time per Prefect home. Two `clef reproduce` on one data dir share its Prefect database,
    and each temporary server migrates it as it starts: two at once on a new database
    collided (`duplicate column name`, `NoSuchTableError: block`), and the loser's traceback
    was printed before Prefect started it again. Under an flock on the home the second finds
    the database migrated (ours). The flow then uses this server (Prefect keeps one per
    process)."""
    import fcntl
    import os

    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    if PREFECT_API_URL.value():  # a real server: nothing to start
        return
    # The server's process takes this environment (`use_data_dir` set the home after
    # Prefect read its settings, so the environment is what it gets).
    home = Path(os.environ.get("PREFECT_HOME") or PREFECT_HOME.value())
    home.mkdir(parents=True, exist_ok=True)
    with (home / "temporary-server.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when closed (or the process dies)
        SubprocessASGIServer().start()
