"""`clef stack` port choice and `clef reproduce`'s check of its parameters (no services)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from clef_core.common.errors import ClefError
from flows.ports import Ports, choose_ports, parse_ports, port_free


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
