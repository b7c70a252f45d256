"""`clef synth`: render every requested layout, in parallel over sequences, with progress.

Output: `<out>/<Dataset root>/...` in each real layout, `<out>/truth/<dataset>.parquet` (what
was rendered: visibility, face box, eyes, AU intensities, true expression) and
`<out>/synth.json` (the options). The same options give byte-identical files.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from clef_core.common.datasets import synth_layouts
from clef_core.common.errors import ClefError
from synthetic.spec import SynthSpec

# Each layout's writer module (its registry records' `synth_writer`): `jobs(spec, layout)`
# and `finish(spec, layout, rows)`.
WRITERS: dict[str, ModuleType] = {
    name: importlib.import_module(str(d.synth_writer)) for name, d in synth_layouts().items()
}


@dataclass(frozen=True)
class SynthSummary:
    dataset: str
    units: int  # sequences, videos or image chunks
    frames: int
    no_face: int
    seconds: float


def _worker_init() -> None:
    cv2.setNumThreads(1)  # parallelism is over sequences; OpenCV threads would oversubscribe


def _run(job: Callable[[], list[dict]]) -> list[dict]:
    return job()


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".clef-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ClefError(f"cannot write to output directory {out}: {err.strerror or err}") from None


def write_truth(out: Path, dataset: str, rows: list[dict]) -> Path:
    """Rendered ground truth as Parquet (columns named `_x` are layout-only and dropped)."""
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    path = out / "truth" / f"{dataset}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(clean), path)
    return path


def generate(spec: SynthSpec, show_progress: bool = True) -> list[SynthSummary]:
    """Render the datasets of `spec`; returns one summary per dataset."""
    check_writable(spec.out)
    plan = [(d, WRITERS[d].jobs(spec, d)) for d in spec.datasets]
    summaries = []
    workers = max(1, min(spec.workers, os.cpu_count() or 1))
    with (
        ProcessPoolExecutor(
            # spawn, not fork: a forked child inherits OpenCV's busy thread pool and can deadlock.
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
        ) as pool,
        Progress(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[frames]} frames"),
            TimeElapsedColumn(),
            disable=not show_progress,
        ) as progress,
    ):
        for dataset, jobs in plan:
            task = progress.add_task(dataset, total=len(jobs), frames=0)
            start = time.perf_counter()
            rows: list[dict[str, Any]] = []
            for chunk in pool.map(_run, jobs):
                rows.extend(chunk)
                progress.update(task, advance=1, frames=len(rows))
            WRITERS[dataset].finish(spec, dataset, rows)
            write_truth(spec.out, dataset, rows)
            summaries.append(
                SynthSummary(
                    dataset,
                    len(jobs),
                    len(rows),
                    sum(not r["visible"] for r in rows),
                    time.perf_counter() - start,
                )
            )
    meta = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in asdict(spec).items()
        if k not in ("workers", "out")
    }
    (spec.out / "synth.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return summaries
