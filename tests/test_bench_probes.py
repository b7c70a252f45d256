"""`bench.probes` (`python -m bench.probes`) as a smoke run on the session's synthetic BP4D
shards (two stage-1 steps of batch 8 with instance pairing, beside a random init, one seed
each in two runs): each run writes its table, JSON and plot with probe figures between 0 and
1, and `--combine` merges the two runs into a mean +- sd over both seeds. The figures
themselves come from full runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import probes

pytestmark = pytest.mark.slow


def test_probe_bench_runs_and_combines(shard_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "shards").symlink_to(shard_dir)
    common = ["--data-dir", str(data), "--rows", "random", "SSL", "--threads", "1",
              "--mlflow-uri", f"sqlite:///{data / 'mlflow.db'}", "--set",
              "stage1.steps_per_epoch=2", "--set", "stage1.batch_size=8"]  # fmt: skip
    for seed in (0, 1):
        rows = probes.main([*common, "--seeds", str(seed), "--out", str(tmp_path / f"s{seed}")])
        assert [r["label"] for r in rows] == ["random", "SSL"]
        for r in rows:
            for key in probes.KEYS:
                assert 0.0 <= r[key] <= 1.0, (r["label"], key)
        assert {p.name for p in (tmp_path / f"s{seed}").iterdir()} >= {
            "probes.md",
            "probes.json",
            "probes.png",
        }
    merged = probes.main(["--combine", str(tmp_path / "s0"), str(tmp_path / "s1"),
                          "--out", str(tmp_path / "all")])  # fmt: skip
    runs = json.loads((tmp_path / "all" / "probes.json").read_text())["runs"]
    assert {row: len(r) for row, r in runs.items()} == {"random": 2, "SSL": 2}
    table = (tmp_path / "all" / "probes.md").read_text()
    for r in merged:
        assert r["seeds"] == 2 and math.isfinite(r["au_f1_sd"])
        assert f"| {r['label']} | 2 |" in table  # each row's number of seeds
        values = [run["au_f1"] for run in runs[r["label"]]]
        assert r["au_f1"] == pytest.approx(sum(values) / 2)
