"""`bench.label_efficiency` (`python -m bench.label_efficiency`) as a smoke run, stage 1 on
BP4D's training parts or on all of BP4D+ (`--corpus`): one seed, two label fractions, a few
steps of each stage on the session's synthetic shards; its table, JSON and plot hold finite
figures of the right shape, and the row without stage 1 took the same total steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import label_efficiency


@pytest.mark.parametrize("corpus", ["bp4d", "bp4d_plus"])
def test_label_efficiency_writes_a_table_json_and_plot(
    corpus: str, shard_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = tmp_path_factory.mktemp("label_efficiency")
    (data / "shards").symlink_to(shard_dir)
    out = data / "out"
    tiny = ["stage1.steps_per_epoch=2", "stage2.steps_per_epoch=3", "stage1.batch_size=8",
            "stage2.batch_size=8"]  # fmt: skip
    argv = ["--data-dir", str(data), "--seeds", "0", "--fractions", "0.5", "1", "--out", str(out),
            "--mlflow-uri", f"sqlite:///{data}/mlflow.db", "--corpus", corpus,
            *(a for s in tiny for a in ("--set", s))]  # fmt: skip
    assert label_efficiency.main(argv) == out
    result = json.loads((out / "label_efficiency.json").read_text())
    assert set(result["scores"]) == {"PA+PI+N+D", "FaRL-I+N+D"} and result["corpus"] == corpus
    for row, by_fraction in result["scores"].items():
        assert list(by_fraction) == ["0.5", "1"]
        for frac, (run,) in by_fraction.items():
            assert all(math.isfinite(run[k]) for k in ("f1", "auc", "always_f1")), (row, frac)
            assert run["total_steps"] == 5  # parity: 2 + 3 with stage 1, 5 without
            assert (run["stage1_steps"] == 2) == (row == "PA+PI+N+D")
            assert len(run["subjects"]) == (2 if frac == "0.5" else 0)  # 0: every subject
    table = (out / "label_efficiency.md").read_text().splitlines()
    where = "BP4D's training parts" if corpus == "bp4d" else "all of bp4d_plus"
    assert f"stage 1 on {where}" in table[0]
    assert sum(line.startswith("| PA+PI+N+D") or line.startswith("| FaRL") for line in table) == 4
    assert (out / "label_efficiency.png").stat().st_size > 10_000
    with pytest.raises(SystemExit):
        label_efficiency.parse(["--fractions", "0"])  # argparse's one-line error
