"""The speed benchmarks (`bench.train_speed`, `bench.preprocess_speed`, `bench.predict_speed`,
`bench.synth_speed`) as smoke runs (`--smoke`: tiny sizes, a step or a round of everything):
each runs to the end, its figures are finite and positive and its last line has the form its
docs promise. Speed itself is measured by running them (docs/measurements.md), not here."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _last_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_train_speed(
    shard_dir: Path, tmp_path: Path, local_ray: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both stages inside Ray Train (the project's loop, warm steps from the worker's step
    times) and in the plain loop, and the stage-2 profile. One thread: a smoke run on a
    loaded machine, not a measurement."""
    from bench.train_speed.cli import main

    results = main(["--smoke", "--data-dir", str(shard_dir.parent), "--out", str(tmp_path),
                    "--set", "compute.cpus_per_worker=1"])  # fmt: skip
    for stage in ("stage1", "stage2"):
        r = results[stage]
        assert all(_positive(r[k]) for k in ("ray", "plain", "ratio")), r
        assert r["ratio"] == pytest.approx(r["ray"] / r["plain"])
    profile = results["profile_stage2_ms"]
    assert {"image tower forward", "backward (both towers)", "AdamW step"} <= set(profile)
    assert all(_positive(v) for v in profile.values()), profile
    assert re.fullmatch(r"ray/plain stage1 \d+\.\d\d stage2 \d+\.\d\d", _last_line(capsys))
    assert (tmp_path / "train_speed.json").is_file()


def test_preprocess_speed(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.preprocess_speed import main

    results = main(["--smoke"])
    for key in ("opencv", "decord", "pyav", "pipeline", "bp4d_full", "bp4d_reduced", "ratio"):
        assert _positive(results[key]), (key, results[key])
    assert 0 < results["faces"] <= 1
    line = _last_line(capsys)
    assert re.fullmatch(r"pipeline \d+ frames/CPU-s, decode \d+, ratio \d+\.\d\d", line), line


def test_predict_speed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`clef predict` and crop scoring beside decode-only, and the per-architecture table
    (cpu-tiny here; the paper's ViT-B/16 takes minutes on a CPU)."""
    from bench.predict_speed import main

    summary = main(["--smoke", "--presets", "cpu-tiny", "--threads", "1", "--out", str(tmp_path)])
    for key in ("decode only, opencv", "clef predict (whole)", "scoring aligned crops", "ratio"):
        assert _positive(summary[key]), (key, summary[key])
    tiny = summary["presets"]["cpu-tiny"]
    for precision in ("fp32", "bf16"):
        for threads in (1, 2):
            assert _positive(tiny[f"crops, {precision}, {threads} thread(s)"])
    assert _last_line(capsys).startswith("cpu-tiny: clef predict ")
    assert (tmp_path / "predict_speed.json").is_file()


def test_synth_speed() -> None:
    from bench.synth_speed import main

    results = main(["--smoke"])
    assert all(_positive(results[k]) for k in ("render", "render_jpeg", "generate")), results
    assert 0.5 < results["detected"] <= 1  # the detector finds the visible synthetic faces
