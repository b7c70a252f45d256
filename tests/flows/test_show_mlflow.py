"""The end of a training command with the MLflow server gone (docs/faults.md): training is
done and its checkpoints written, so the closing links are one warning line plus what is
still spooled and how `clef sync-tracking` delivers it, never an exception (exit 3)."""

from __future__ import annotations

import io
import socket
from pathlib import Path

from rich.console import Console

from clef_core.tracking.spool import SpoolTracker, spool_dir
from flows.train import show_mlflow


def _dead_uri() -> str:
    """A server that is not running: a port just free on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _shown(uri: str, spool: Path) -> list[str]:
    out = io.StringIO()
    show_mlflow(Console(file=out, width=100), uri, "clef", spool)
    return out.getvalue().splitlines()


def test_a_server_gone_at_the_end_is_a_warning_and_the_spool_summary(tmp_path: Path) -> None:
    uri = _dead_uri()
    spool = spool_dir(tmp_path)
    tracker = SpoolTracker(uri, "run0", spool, retry_s=60)
    tracker.log_metrics({"f1_mean": 0.5}, step=0)
    tracker.terminate()
    assert tracker.close(timeout=1) == 2  # the metrics and the run's end, kept

    warning, summary = _shown(uri, spool)  # one line each (soft-wrapped)
    assert warning.startswith(f"warning: MLflow at {uri} did not answer (")
    assert warning.endswith("); no links to the runs")
    assert summary.startswith(f"2 tracking calls of 1 MLflow run(s) are not in {uri} yet")
    assert f"kept in {spool}" in summary
    assert f"`clef sync-tracking --data-dir {tmp_path}`" in summary


def test_a_server_gone_with_nothing_spooled_says_so(tmp_path: Path) -> None:
    uri = _dead_uri()
    warning, summary = _shown(uri, spool_dir(tmp_path))
    assert warning.startswith(f"warning: MLflow at {uri} did not answer")
    assert summary.startswith("nothing is left to send in ")
