"""The linear probes of frozen image features (`clef_core.training.probe`) as a flow task and
their record: `probes.json`, `probes.md`, `probes.png` and one MLflow run per probed model
(experiment `<prefix>-probe`). `clef probe` and the `clef` flow both call `record_probes`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from clef_core.common.results import UnitResult
from clef_core.method.config import ExperimentConfig
from clef_core.tracking.runbook import RunBook
from clef_core.training.probe import RANDOM, ProbeResult
from clef_core.training.probe_cache import cached_probe

EXPERIMENT = "probe"  # MLflow experiment `<prefix>-probe`


def label_of(spec: str, name: str | None = None) -> str:
    """How a probed model is named in tables: "random init" or its unit's / folder's name."""
    if spec == RANDOM:
        return "random init"
    if name:
        return name
    folder = Path(spec).parent.name  # a unit's folder: <unit>-<16-hex key>
    unit = re.fullmatch(r"(s[12]-.+)-[0-9a-f]{16}", folder)
    return unit.group(1) if unit else folder or spec


def record_probes(book: RunBook, results: list[tuple[str, ProbeResult]], out: Path) -> Path:
    """Write the probes' table, plot and JSON under `out` and log each to MLflow; returns the
    JSON's path. `results`: (label, result) pairs, in the order to show."""
    from clef_core.tracking.plots import probe_bars
    from clef_core.tracking.report import probe_table

    out.mkdir(parents=True, exist_ok=True)
    rows = [{"label": label, **r.as_dict()} for label, r in results]
    path = out / "probes.json"
    path.write_text(json.dumps(rows, indent=1))
    (out / "probes.md").write_text("\n".join(probe_table(rows)) + "\n")
    probe_bars(rows, out / "probes.png", "Linear probes of the frozen image features")
    for label, r in results:
        run_id = book.child(EXPERIMENT, f"{label} {r.dataset} fold {r.fold}",
                            {"clef.probe": label})  # fmt: skip
        tracker = book.tracker(run_id)
        tracker.log_params({"model": r.model, "dataset": r.dataset, "fold": r.fold})
        tracker.log_metrics(r.metrics(), step=0)
        tracker.log_artifact(out)
        book.finish(run_id)
    return path


@task(cache_policy=NO_CACHE)
def probes(cfg: ExperimentConfig, stage1: list[UnitResult], book: RunBook, out: Path) -> list[dict[str, Any]]:  # fmt: skip
    """Probe each stage-1 unit of an AU dataset's fold against a random initialisation of the
    same architecture, on that fold (the demo: BP4D fold 1); results cached by content
    (`probe_cache`), so a rerun with nothing changed fits nothing again."""
    results: list[tuple[str, ProbeResult]] = []
    for unit in stage1:
        if unit.fold is None:  # stage 1 on a whole corpus (FER's BP4D+): no held-out people
            continue
        for spec, name in ((RANDOM, None), (unit.checkpoint, f"stage 1 ({unit.unit})")):
            r = cached_probe(cfg, spec, unit.dataset, unit.fold)
            results.append((label_of(spec, name), r))
            get_run_logger().info(
                "probe %s on %s fold %d: AU F1 %.3f (always %.3f, activity only %.3f), "
                "activity %.3f, identity %.3f", label_of(spec, name), r.dataset, r.fold,
                r.au_f1, r.au_f1_always, r.au_f1_activity, r.activity_acc, r.identity_acc,
            )  # fmt: skip
    if results:
        record_probes(book, results, out / "probes")
    book.close()
    return [{"label": label, **r.as_dict()} for label, r in results]
