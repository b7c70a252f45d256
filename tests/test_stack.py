"""The product's front door against real servers: `clef stack up` starts Prefect, MLflow, a
Ray head and the deployment server on 127.0.0.1; `prefect deployment run clef/smoke` completes;
MLflow's REST API holds the fold's f1_mean and per-AU F1 under the reproduction's parent run;
the MLflow UI page of that run is screenshotted in headless Chromium (when installed);
`clef stack down` stops exactly what was started."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from flows.stack import Ports, down, status, up

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_smoke_deployment_on_the_local_stack(
    synth_root: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(synth_root, data / "synthetic")
    ports = Ports(*(_free_port() for _ in range(5)))
    try:
        services = up(data, ports)
        assert {s.name for s in services} == {"prefect", "mlflow", "ray", "deployments"}
        assert all(alive and answering for _, alive, answering in status(data))
        assert all("127.0.0.1" in s.url for s in services)
        env = {
            **os.environ,
            "PREFECT_API_URL": f"http://127.0.0.1:{ports.prefect}/api",
            "PREFECT_HOME": str(data / "prefect"),
        }
        run = subprocess.run(
            [str(Path(sys.executable).with_name("prefect")), "deployment", "run", "clef/smoke",
             "--watch", "--watch-timeout", "600"],
            env=env, capture_output=True, text=True, timeout=660,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "Completed" in run.stdout + run.stderr

        api = f"http://127.0.0.1:{ports.mlflow}/api/2.0/mlflow"
        exp = _get(f"{api}/experiments/get-by-name?experiment_name=clef-bp4d")["experiment"]
        runs = _post(f"{api}/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        metrics = [{m["key"]: m["value"] for m in r["data"].get("metrics", [])} for r in runs]
        parent = next(i for i, t in enumerate(tags) if t.get("clef.parent") == "1")
        fold = next(i for i, t in enumerate(tags) if t.get("clef.unit") == "s2-bp4d-fold1")
        assert tags[fold]["mlflow.parentRunId"] == runs[parent]["info"]["run_id"]
        assert 0.0 <= metrics[fold]["f1_mean"] <= 1.0 and "f1_au12" in metrics[fold]
        assert metrics[parent]["f1_mean"] == pytest.approx(metrics[fold]["f1_mean"])
        _screenshot(ports, exp["experiment_id"], runs[parent]["info"]["run_id"], tmp_path)
    finally:
        stopped = down(data)
    assert set(stopped) == {"prefect", "mlflow", "ray", "deployments"}
    assert status(data) == []


def _screenshot(ports: Ports, experiment: str, run_id: str, out: Path) -> None:
    """The parent run's MLflow UI page as a PNG (kept in the test's tmp dir)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return  # the REST checks above stand; the screenshot needs Debian's chromium
    url = f"http://127.0.0.1:{ports.mlflow}/#/experiments/{experiment}/runs/{urllib.parse.quote(run_id)}"
    png = out / "mlflow-parent-run.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
         "--window-size=1400,1000", f"--screenshot={png}", url],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert png.is_file() and png.stat().st_size > 10_000, "Chromium took no screenshot"
