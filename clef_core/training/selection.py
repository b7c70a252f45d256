"""Which rows stage 1 pre-trains on (the paper, section 4.1.1), decided once per unit from the
shards' id and label columns (no images read) and applied alike by the streaming pipeline
(`data.load_split`) and the decoded cache (`cache.cached_split`). Ray-free.

- BP4D: "we split all labeled frames into subject-exclusive 3-fold with 12 AUs for both two
  stages": stage 1 reads every coded frame (at least one AU coded 0 or 1) of the training
  parts, and no other; the activities are not balanced.
- BP4D+: "we equally sample 480,000 frames from all 1.5 M frames by 10 activity categories":
  every frame counts, coded or not, and each activity gives at most
  `stage1.frames_per_activity` of them (48,000 = 480,000 / 10), all of its frames where it has
  fewer (said in the log and in the unit's result). Which frames: those with the smallest
  row keys (`cache.row_key`, a hash of subject, task and frame), so the sample is the same in
  every epoch, run and pipeline, and spread over subjects and time (ours: the paper does not
  say how it sampled). Taken within the unit's training parts (ours: the paper gives the
  number, not whether it is per fold).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clef_core.common.datasets import REGISTRY
from clef_core.common.storage import Where
from clef_core.training.cache import read_table, row_keys, shard_files

log = logging.getLogger(__name__)


def policy_of(dataset: str) -> str:
    """What stage 1 reads of a source (its registry record's `stage1_rows`): "coded" = the
    coded frames only, unbalanced; "sampled" = every frame, at most `frames_per_activity` per
    activity; "all" (any other source) = every frame with a task."""
    return REGISTRY[dataset].stage1_rows if dataset in REGISTRY else "all"


@dataclass(frozen=True)
class Stage1Rows:
    """The rows stage 1 reads from one dataset's training parts."""

    dataset: str
    labels: str | None  # "au": coded frames only (`data.keep_rows`)
    limit: dict[str, int] | None  # task -> largest row key kept; None = every row
    kept: dict[str, int] = field(default_factory=dict)  # task -> rows read
    available: dict[str, int] = field(default_factory=dict)  # task -> rows there were
    cap: int | None = None  # frames_per_activity, when it applies

    @property
    def rows(self) -> int:
        return sum(self.kept.values())

    @property
    def short(self) -> dict[str, int]:
        """Activities with fewer frames than the cap (all of theirs are read)."""
        if self.cap is None:
            return {}
        return {t: n for t, n in self.available.items() if n < self.cap}

    def record(self) -> dict[str, float]:
        """For the unit's result and MLflow: rows read and available per activity."""
        out: dict[str, float] = {f"stage1_rows_{self.dataset}": float(self.rows)}
        for task in self.kept:
            out[f"stage1_rows_{self.dataset}_{task}"] = float(self.kept[task])
            out[f"stage1_available_{self.dataset}_{task}"] = float(self.available[task])
        if self.cap is not None:
            out[f"stage1_cap_{self.dataset}"] = float(self.cap)
        return out

    def describe(self) -> str:
        what = {"au": "coded frames"}.get(str(self.labels), "frames")
        cap = f", at most {self.cap} per activity" if self.cap is not None else ""
        per = ", ".join(f"{t} {n}" for t, n in self.kept.items())
        return f"{self.dataset} stage 1: {self.rows} {what}{cap} ({per})"


def _task_order(task: str) -> int:
    return int(task.lstrip("T")) if task.lstrip("T").isdigit() else 0


def select_stage1(
    dataset: str,
    columns: dict[str, np.ndarray],
    parts: Sequence[int] | None,
    frames_per_activity: int | None,
) -> Stage1Rows:
    """The selection from id and label columns: `task` (str, "" none), `part` (int), `row`
    (`cache.row_key`) and, for coded-only sources, `au` ([N, C], -1 unknown)."""
    policy = policy_of(dataset)
    tasks = np.asarray(columns["task"]).astype(str)
    mask = tasks != ""  # rows without an activity have no stage-1 label
    if parts is not None:
        mask &= np.isin(columns["part"], np.asarray(parts))
    labels = None
    if policy == "coded":
        labels = "au"
        au = np.asarray(columns["au"])
        mask &= (au >= 0).any(1) if au.ndim == 2 and au.shape[1] else False
    cap = frames_per_activity if policy == "sampled" else None
    kept, available, limit = {}, {}, {}
    for task in sorted(set(tasks[mask].tolist()), key=_task_order):
        in_task = mask & (tasks == task)
        available[task] = int(in_task.sum())
        kept[task] = available[task] if cap is None else min(cap, available[task])
        if cap is not None:  # the `kept` smallest row keys: the largest one is the limit
            limit[task] = int(np.sort(np.asarray(columns["row"])[in_task])[kept[task] - 1])
    sel = Stage1Rows(dataset, labels, limit if cap is not None else None, kept, available, cap)
    log.info(sel.describe())
    if sel.short:
        log.warning(
            "%s stage 1: %d of %d activities have fewer frames than stage1.frames_per_activity"
            "=%d in the training parts, so all of theirs are used: %s",
            dataset, len(sel.short), len(available), cap,
            ", ".join(f"{t} {n}" for t, n in sel.short.items()),
        )  # fmt: skip
    return sel


def stage1_rows(
    shard_dir: Where, dataset: str, parts: Sequence[int] | None, frames_per_activity: int | None
) -> Stage1Rows:
    """`select_stage1` on a dataset's shards, from their id and label columns (seconds for
    BP4D+'s 1.5 M rows, no images read)."""
    policy = policy_of(dataset)
    names = ["subject", "task", "frame", "part"] + (["au"] if policy == "coded" else [])
    files = shard_files(shard_dir, dataset)
    table = pa.concat_tables([read_table(f, names) for f in files])
    tasks = table["task"].to_pylist()
    columns = {"task": np.asarray([t or "" for t in tasks], str), "part": table["part"].to_numpy()}
    if policy == "coded":
        columns["au"] = _au_matrix(table["au"].combine_chunks())
    if policy == "sampled":
        subjects, frames = table["subject"].to_pylist(), table["frame"].to_pylist()
        columns["row"] = row_keys(subjects, tasks, frames)
    return select_stage1(dataset, columns, parts, frames_per_activity)


def _au_matrix(au: pa.ListArray) -> np.ndarray:
    """list<int8> AU column -> int8 [N, C] (rows without AUs: all -1)."""
    lengths = pc.list_value_length(au).to_numpy(zero_copy_only=False)
    width = int(lengths.max()) if len(lengths) else 0
    if (lengths == width).all():
        return au.flatten().to_numpy(zero_copy_only=False).astype(np.int8).reshape(-1, width)
    rows = au.to_pylist()
    return np.array([a if len(a) else [-1] * width for a in rows], np.int8).reshape(-1, width)
