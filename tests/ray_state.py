"""What the Ray instance this test process is connected to runs, from its GCS actor table:
tests find their own workers there instead of scanning every process on the machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def train_workers(alive_only: bool = False) -> list[dict[str, Any]]:
    """Every Ray Train worker actor of the connected instance (`Pid`, `State`, `Address`...)."""
    # Ray's public state API (ray.util.state) needs the dashboard, which our instances do not
    # start; the GCS table behind it is the private one below.
    from ray._private import state

    return [
        a
        for a in state.actors().values()
        if a["ActorClassName"] == "RayTrainWorker" and (not alive_only or a["State"] == "ALIVE")
    ]


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: its parent has not reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
