"""`clef preprocess` as a user runs it: Ray tasks over sequences, a summary table, a run
killed part-way that resumes to the same shards as an uninterrupted run, bad inputs listed
with exit code 1 (a mix: the good ones written; all bad: the table), and a bug in a task
stopping the run with its traceback (exit code 3)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from preprocessing.pipeline import PreprocessOptions, plan, process_sequence

CLEF = str(Path(sys.executable).with_name("clef"))
pytestmark = pytest.mark.slow


def clef_env(tmp: Path) -> dict[str, str]:
    # A private Ray temp dir, so leftovers of a killed run can be found and stopped.
    return dict(os.environ, COLUMNS="200", NO_COLOR="1", RAY_TMPDIR=str(tmp))


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))
    }


def stop_ray_under(tmp: Path) -> None:
    subprocess.run(["pkill", "-9", "-f", str(tmp)], check=False)


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """A short private Ray temp dir (Ray's socket paths must stay under 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="clef-ray-", dir="/tmp"))
    yield path
    stop_ray_under(path)
    shutil.rmtree(path, ignore_errors=True)


def test_cli_runs_on_ray_and_prints_a_summary(
    synth_root: Path, tmp_path: Path, ray_tmp: Path
) -> None:
    out = subprocess.run(
        [
            CLEF,
            "preprocess",
            "--dataset",
            "bp4d_plus",
            "--root",
            str(synth_root / "BP4D+"),
            "--out",
            str(tmp_path / "shards"),
        ],
        capture_output=True,
        text=True,
        env=clef_env(ray_tmp),
        timeout=600,
    )
    stop_ray_under(ray_tmp)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "frames/s" in out.stdout and "faces %" in out.stdout
    # Ray's own INFO lines go to <data dir>/logs/clef.log, not between the bar and the table.
    assert "Started a local Ray instance" not in out.stdout + out.stderr
    assert "Started a local Ray instance" in (tmp_path / "logs" / "clef.log").read_text()
    n_truth = pq.read_metadata(synth_root / "truth/bp4d_plus.parquet").num_rows
    rows = sum(
        pq.read_metadata(p).num_rows for p in (tmp_path / "shards/bp4d_plus").glob("*.parquet")
    )
    assert rows == n_truth
    assert (tmp_path / "shards/bp4d_plus/manifest.json").exists()


def test_killed_run_resumes_to_identical_shards(
    synth_root: Path, tmp_path: Path, ray_tmp: Path
) -> None:
    import torch

    reference = tmp_path / "reference"
    opts = PreprocessOptions("bp4d", synth_root / "BP4D", reference)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray task: float sums (MTCNN) depend on the thread count
    try:
        for seq in plan(opts)[0]:
            process_sequence(opts, seq)
    finally:
        torch.set_num_threads(threads)
    shards = tmp_path / "shards"
    cmd = [
        CLEF,
        "preprocess",
        "--dataset",
        "bp4d",
        "--root",
        str(synth_root / "BP4D"),
        "--out",
        str(shards),
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clef_env(ray_tmp),
        start_new_session=True,
    )
    deadline = time.time() + 300
    while (
        len(list((shards / "bp4d").glob("*.parquet"))) < 5
        and time.time() < deadline
        and proc.poll() is None
    ):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    stop_ray_under(ray_tmp)
    done_before = len(list((shards / "bp4d").glob("*.parquet")))
    assert 0 < done_before < 48 and not (shards / "bp4d/manifest.json").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=clef_env(ray_tmp), timeout=600)
    stop_ray_under(ray_tmp)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert digests(shards / "bp4d") == digests(reference / "bp4d")  # same bytes, no duplicates
    assert not list((shards / "bp4d").glob(".*tmp"))


def test_bad_inputs_are_listed_and_exit_1_with_the_good_ones_written(
    synth_root: Path, tmp_path: Path, ray_tmp: Path
) -> None:
    """A folder of videos where one is garbage: the good one's shard is written, the bad one
    named, exit 1; a folder of garbage only: the table, exit 1."""
    mixed, garbage = tmp_path / "mixed", tmp_path / "garbage"
    mixed.mkdir()
    garbage.mkdir()
    shutil.copy(synth_root / "videos" / "clip_00.mp4", mixed / "good.mp4")
    for folder in (mixed, garbage):
        (folder / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    shutil.copy(garbage / "broken.mp4", garbage / "broken2.mp4")

    def run(root: Path) -> subprocess.CompletedProcess:
        cmd = [CLEF, "preprocess", "--dataset", "video", "--root", str(root),
               "--out", str(tmp_path / root.name)]  # fmt: skip
        out = subprocess.run(
            cmd, capture_output=True, text=True, env=clef_env(ray_tmp), timeout=600
        )
        stop_ray_under(ray_tmp)
        return out

    out = run(mixed)
    assert out.returncode == 1, out.stdout + out.stderr[-2000:]
    assert "broken" in out.stdout and "frames/s" in out.stdout and "Traceback" not in out.stderr
    assert [p.name for p in (tmp_path / "mixed/video").glob("*.parquet")] == ["good.mp4.parquet"]
    out = run(garbage)
    assert out.returncode == 1 and "frames/s" in out.stdout and "Traceback" not in out.stderr


# Patches preprocessing.pipeline.align_item once the module is imported (lazily, so Ray's own
# Python processes start as fast as ever).
INJECT = """
import importlib.abc, importlib.util, sys

def broken(*args, **kwargs):
    raise TypeError("an injected programming error")

class Inject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "preprocessing.pipeline":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.align_item = broken

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Inject())
"""


def test_a_bug_in_a_ray_task_stops_the_run_with_its_traceback(
    synth_root: Path, tmp_path: Path, ray_tmp: Path
) -> None:
    """A programming error inside a sequence's processing, injected in every process of the
    run (the Ray workers too) through a sitecustomize: the run stops with the error's
    traceback and exit code 3, instead of counting the sequence as a bad input."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECT)
    env = clef_env(ray_tmp)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(inject), env.get("PYTHONPATH")]))
    cmd = [CLEF, "preprocess", "--dataset", "video", "--root", str(synth_root / "videos"),
           "--out", str(tmp_path / "shards")]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    stop_ray_under(ray_tmp)
    assert out.returncode == 3, out.stdout + out.stderr[-3000:]
    assert "Traceback" in out.stderr and "an injected programming error" in out.stderr
    assert "in align_item" not in out.stdout  # not listed as an unreadable input
    assert not list((tmp_path / "shards" / "video").glob("*.parquet"))
