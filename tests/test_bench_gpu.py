"""`bench.gpu_train`, the GPU benchmark (`python -m bench.gpu_train`), as a smoke run on the
CPU with the cpu-tiny preset (a few steps of everything, batch 8 at 64 px, one thread): it
writes its JSON and markdown table, and every figure in them is finite and positive. The GPU
figures themselves come from running it on a GPU (`bench/gpu_check.sh`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.gpu_train.cli import main


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("gpu_bench")
    results = main(
        [
            "--preset", "cpu-tiny", "--device", "cpu", "--smoke", "--threads", "1",
            "--set", "stage1.batch_size=8", "--set", "stage2.batch_size=8",
            "--set", "model.inline.image_size=64", "--out", str(out),
        ]
    )  # fmt: skip
    return results, out


def test_writes_json_and_table(bench: tuple[dict, Path]) -> None:
    results, out = bench
    assert json.loads((out / "gpu_train.json").read_text()) == json.loads(json.dumps(results))
    table = (out / "gpu_train.md").read_text()
    assert "| stage | step | batch |" in table and "Targets:" in table
    assert not results["skipped"] and not results["problems"], results


def test_every_step_measured_with_positive_figures(bench: tuple[dict, Path]) -> None:
    results, _ = bench
    seen = {(m["stage"], m["step"], m["batch_kind"]) for m in results["measurements"]}
    assert seen == {
        (stage, step, kind)
        for stage in (1, 2)
        for step in ("clef", "open_clip")
        for kind in ("paper", "largest")
    }
    for m in results["measurements"]:
        for key in ("samples_per_s", "images_per_s", "step_ms", "gflop_per_sample", "tflops",
                    "mfu", "peak_memory_gib"):  # fmt: skip
            assert _positive(m[key]), (m["stage"], m["step"], key, m[key])
        if m["step"] == "clef" and m["stage"] == 1:  # two views a sample
            assert m["images_per_s"] == pytest.approx(2 * m["samples_per_s"])
    for stage in ("stage1", "stage2"):  # the search doubled up to its cap, twice the batch
        assert results["largest_batch"][stage]["batch"] == 16
    assert len(results["ratios"]) == 4
    for r in results["ratios"]:
        assert all(_positive(r[k]) for k in ("flops_ratio", "samples_ratio", "images_ratio"))
    (p,) = results["predict"]
    assert _positive(p["frames_per_s"]) and _positive(p["mfu"])


def test_flop_count(bench: tuple[dict, Path]) -> None:
    """The text tower's formula is torch's own count of the same forward plus at most the
    attention products (4 n^2 w a layer), which the counter sees only on some attention kernels
    (cpu-tiny's text tower: 2 layers, width 64, 77 tokens)."""
    fl = bench[0]["flops"]
    assert _positive(fl["image_forward_gflop"]) and _positive(fl["text_forward_gflop"])
    attention = 2 * 4 * 77**2 * 64 / 1e9
    missed = fl["text_forward_gflop"] - fl["text_counted_gflop"]
    assert -1e-9 <= missed <= attention + 1e-9, (missed, attention)
    assert fl["clip_train_gflop_per_sample"] == pytest.approx(
        3 * (fl["image_forward_gflop"] + fl["text_forward_gflop"])
    )
