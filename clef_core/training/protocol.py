"""The paper's evaluation protocol as data: which stage runs on which dataset and fold, what
each starts from, and a key that names a unit of work by everything its result depends on.

- BP4D (3 folds), BP4D+ (4 folds): stage 1 and stage 2 both trained on the fold's training
  parts only, evaluated on the held-out part. Stage 1 reads BP4D's coded frames and a sample
  of at most `stage1.frames_per_activity` BP4D+ frames per activity (`clef_core.training.selection`).
- DISFA (3 folds): fine-tuned from the BP4D stage-2 model of the same fold number (the two
  datasets share no subjects, so any BP4D fold is leak-free; the same number keeps runs paired).
- FER (RAF-DB, AffectNet-7/8, FERPlus; one train/test split): fine-tuned from the stage-1
  model pre-trained on all of BP4D+.
Folds are numbered from 1 as in the papers; fold k tests on part k-1 (`preprocessing.folds`).
Each dataset's parts and what its stage 2 starts from are its registry record's
(`clef_core.common.datasets`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from clef_core.common.datasets import REGISTRY, of_task, record
from clef_core.common.errors import ClefError
from clef_core.common.manifest import Manifest, read_manifest
from clef_core.common.storage import Where
from clef_core.method.config import ExperimentConfig

# A view of the registry (clef_core.common.datasets): each AU dataset's number of folds (the
# others have one train/test split).
AU_FOLDS = {name: REGISTRY[name].folds for name in of_task("au")}
# The zero-shot experiments' datasets (the CLEF poster's; the paper gives no figure): RAF-DB's
# and FERPlus's expressions seen -> unseen, and BP4D's AUs -> their expressions.
ZEROSHOT_FERS, ZEROSHOT_AU = ("rafdb", "ferplus"), "bp4d"
# The paper's results (mean F1 over AUs in %, FER accuracy in %): Tables 2-5, typed into the
# registry (`clef_core.tracking.paper.MEANS` is the same view, for the report).
PAPER = {
    d.name: d.paper_mean
    for d in REGISTRY.values()
    if d.task in ("au", "fer") and d.paper_mean is not None
}


@dataclass(frozen=True)
class Unit:
    """One training run: a stage on a dataset's fold (fold None = every part, stage 1 only)."""

    stage: int
    dataset: str
    fold: int | None
    init: Unit | None = None  # the unit whose final checkpoint this one starts from

    @property
    def name(self) -> str:
        return f"s{self.stage}-{self.dataset}-{'all' if self.fold is None else f'fold{self.fold}'}"

    @property
    def train_parts(self) -> tuple[int, ...] | None:
        if self.fold is None:
            return None
        parts = record(self.dataset).parts
        if not parts:
            return (0,)  # one train/test split: the readers write part 0 = train, 1 = test
        return tuple(p for p in range(len(parts)) if p != self.fold - 1)

    @property
    def test_parts(self) -> tuple[int, ...] | None:
        if self.fold is None:
            return None
        return (self.fold - 1,) if record(self.dataset).parts else (1,)


def folds_of(dataset: str, wanted: list[int] | None) -> list[int]:
    """The fold numbers of `dataset` to run (FER datasets have the one split, fold 1)."""
    n = REGISTRY[dataset].folds if dataset in REGISTRY else 1
    if wanted is None:
        return list(range(1, n + 1))
    bad = [k for k in wanted if not 1 <= k <= max(d.folds for d in REGISTRY.values())]
    if bad:
        raise ClefError(f"fold {bad[0]} does not exist: folds are numbered 1..{n} for {dataset}")
    return [k for k in wanted if k <= n]


def stage2_unit(dataset: str, fold: int, pretrain: bool) -> Unit:
    """The stage-2 unit of (dataset, fold) with the chain of units it starts from."""
    start = record(dataset).start
    source = start.dataset or dataset
    if start.stage == 2:  # another dataset's stage-2 model (DISFA: BP4D's of the same fold)
        init: Unit | None = stage2_unit(source, fold, pretrain)
    else:
        init = Unit(1, source, fold if start.same_fold else None) if pretrain else None
    return Unit(2, dataset, fold, init)


def stage1_of(dataset: str, fold: int = 1) -> Unit:
    """The stage-1 unit the stage 2 of (`dataset`, `fold`) starts from, following a chain
    through another dataset's stage 2 (DISFA: BP4D's) down to its stage 1."""
    unit: Unit | None = stage2_unit(dataset, fold, True)
    while unit is not None and unit.stage != 1:
        unit = unit.init
    if unit is None:
        raise ClefError(f"{dataset}'s protocol has no stage 1 to start from")
    return unit


def zeroshot_datasets(
    fers: tuple[str, ...] = ZEROSHOT_FERS, au_dataset: str = ZEROSHOT_AU
) -> set[str]:
    """Every dataset the zero-shot experiments read: theirs and their stage 1's."""
    return {*fers, au_dataset} | {stage1_of(d).dataset for d in (*fers, au_dataset)}


def plan(cfg: ExperimentConfig) -> list[Unit]:
    """Every unit the protocol needs, each once, dependencies before dependents."""
    pretrain = cfg.stage1.epochs > 0  # ablation PI off = no stage 1
    ordered: list[Unit] = []

    def add(unit: Unit) -> None:
        if unit.init is not None:
            add(unit.init)
        if unit not in ordered:
            ordered.append(unit)

    for dataset in cfg.protocol.datasets:
        for fold in folds_of(dataset, cfg.protocol.folds):
            add(stage2_unit(dataset, fold, pretrain))
    return ordered


def _config_part(cfg: ExperimentConfig, unit: Unit) -> dict[str, Any]:
    """The settings a unit's result depends on (not where services live or what else runs)."""
    dump = cfg.model_dump(mode="json")
    if dump["model"].get("init_source") is None:  # keys from before the field stay the same
        dump["model"].pop("init_source", None)
    compute = {k: dump["compute"][k] for k in ("num_workers", "precision")}
    stage = dump["stage1"] if unit.stage == 1 else dump["stage2"]
    return {"model": dump["model"], "stage": stage, "seed": cfg.seed, "compute": compute}


# Bumped when a code change alters what a unit trains with the same settings (2: an epoch of
# steps_per_epoch batches passes over the data again instead of stopping after one pass; 3:
# stage 1 reads BP4D's coded frames only and samples BP4D+ up to a cap per activity,
# `clef_core.training.selection`; 4: each batch's augmentation is seeded by its (seed, epoch, worker
# rank, batch index), `augment.batch_generator`), so a cached result of the older code is
# trained again, not reused.
TRAINING_VERSION = 4


def unit_key(cfg: ExperimentConfig, unit: Unit, manifests: dict[str, Manifest]) -> str:
    """A hash of the unit, its settings, its input shards and (recursively) its init unit."""
    m = manifests[unit.dataset]
    payload = {
        "unit": unit.name,
        "training": TRAINING_VERSION,
        "config": _config_part(cfg, unit),
        "shards": m.content_digest(),
        "init": unit_key(cfg, unit.init, manifests) if unit.init else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def read_manifests(shard_dir: Where, datasets: set[str]) -> dict[str, Manifest]:
    return {d: read_manifest(shard_dir, d) for d in sorted(datasets)}


def datasets_of(units: list[Unit]) -> set[str]:
    return {u.dataset for u in units}
