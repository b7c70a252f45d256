"""The two CLEF stages: what each reads and what it does, chosen once by its number.

- `Pretraining` (stage 1): the activity rows of its sources (`selection`), labelled by
  activity; two augmented views per image; `method.steps.pretrain_step` (Eq. 2).
- `FineTuning` (stage 2): one dataset's labelled rows of the training parts and of the test
  parts, its label space and class weights; one view; `finetune_step` (Eq. 6); the held-out
  score (`metrics_of`: f1_mean per AU or accuracy); a linear head in the N/D ablation.

`stage_type` maps a stage number to its kind, the only place one is tested: `plan_stage`
(the driver) asks it which rows a job reads, `make_stage` (every worker) builds the `Stage`
that `loop.run_loop` drives, on a Ray Train worker (`ray_train`) or in-process (`local`).
Nothing here imports Ray.
"""

from __future__ import annotations

import functools
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from clef_core.common.errors import ClefError
from clef_core.common.manifest import read_manifest
from clef_core.common.storage import Where
from clef_core.method.checkpoint import save_checkpoint, save_predictions
from clef_core.method.config import AugmentConfig, ExperimentConfig, Stage1Config, Stage2Config
from clef_core.method.labels import LabelSpace, shard_label_space
from clef_core.method.model import ClefModel, build_model, tokenizer_for
from clef_core.method.steps import (
    Gather,
    Predictions,
    StepFn,
    finetune_step,
    make_optimizer,
    metrics_of,
    no_gather,
    predict,
    pretrain_step,
    warmup_cosine,
)
from clef_core.method.weights import au_pos_weights, expression_weights
from clef_core.training.cache import read_table, shard_files, split_mask
from clef_core.training.data import keep_rows
from clef_core.training.selection import select_stage1, stage1_rows

Batch = dict[str, torch.Tensor]  # a batch as the inputs deliver it (uint8 images, labels)


@dataclass(frozen=True)
class StageJob:
    stage: int  # 1 = activity pre-training, 2 = fine-tuning
    datasets: tuple[str, ...]  # stage 1: its sources; stage 2: the one dataset
    train_parts: tuple[int, ...] | None  # fold parts to train on (None = all)
    test_parts: tuple[int, ...] | None = None  # stage 2: parts to evaluate on
    init_from: str | None = None  # checkpoint directory to start from
    name: str = "clef"


@dataclass(frozen=True)
class Split:
    """Rows of one dataset, as `data.load_split` and `cache.cached_split` both take them."""

    dataset: str
    parts: tuple[int, ...] | None  # fold parts (None = all)
    labels: str | None  # "au" / "expression": only rows with a known label
    limit: dict[str, int] | None = None  # stage 1: task -> largest row key (selection)
    # stage 2: the subjects whose labels are kept (`label_subjects`); None = every subject
    subjects: tuple[str, ...] | None = None


@dataclass(frozen=True)
class StagePlan:
    """What a stage reads, decided once on the driver and sent to every worker (plain data:
    `stage` names the `Stage` type each worker builds with `make_stage`)."""

    stage: int
    train: tuple[Split, ...]
    rows: int  # training rows (all workers together): one pass = rows // batch_size steps
    test: Split | None = None  # stage 2: the held-out rows
    activities: tuple[tuple[str, str], ...] = ()  # stage 1: (dataset, task), the labels' order
    space: LabelSpace | None = None  # stage 2: the labels
    weights: tuple[float, ...] | None = None  # stage 2: class weights of the training rows
    record: dict[str, float] = field(default_factory=dict)  # stage 1: rows read per activity


def activities_of(shard_dir: Where, datasets: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every (dataset, task) with rows, in a fixed order: the stage-1 activity labels."""
    out = []
    for d in datasets:
        out += [(d, t) for t in read_manifest(shard_dir, d).tasks]
    return out


def _class_weights(values: np.ndarray, space: LabelSpace) -> tuple[float, ...]:
    """From the training rows' labels (`clef_core.method.weights`)."""
    if space.kind == "au":
        return tuple(au_pos_weights(values).tolist())
    return tuple(expression_weights(values, space.n).tolist())


def _shard_labels(
    shard_dir: Where, dataset: str, parts: tuple[int, ...] | None, column: str
) -> tuple[np.ndarray, np.ndarray]:
    """The subject and label columns of the labelled training rows, read straight from the
    shards (no images, no Ray job: milliseconds)."""
    tables = [read_table(f, ["part", "subject", column]) for f in shard_files(shard_dir, dataset)]
    rows = keep_rows(pa.concat_tables(tables), parts, column)
    return np.asarray(rows["subject"].to_pylist(), str), np.array(rows[column].to_pylist())


def label_subjects(subjects: Sequence[str], fraction: float, seed: int) -> tuple[str, ...]:
    """Ours (`stage2.label_fraction`): the training subjects whose labels stage 2 keeps, a
    `fraction` of the distinct `subjects` rounded up (at least one), drawn with `seed` from
    them in sorted order, so the same subjects whichever path (shards or decoded cache) and
    row order listed them. Sorted."""
    if not 0 < fraction <= 1:
        raise ClefError(f"stage2.label_fraction must be in (0, 1], got {fraction}")
    pool = sorted(set(subjects))
    if not pool:
        raise ClefError("stage2.label_fraction: the training split has no labelled subjects")
    n = max(1, math.ceil(fraction * len(pool) - 1e-9))  # 0.1 x 30 = 3, not 4 (float error)
    picked = np.random.default_rng(seed).choice(len(pool), n, replace=False)
    return tuple(sorted(pool[i] for i in picked))


def plan_stage(
    cfg: ExperimentConfig,
    job: StageJob,
    arrays: dict[str, np.ndarray] | None = None,
    space: LabelSpace | None = None,
) -> StagePlan:
    """The rows `job` reads, as its stage (`stage_type`) plans them. With `arrays` (the one
    dataset's decoded columns, as `cache.decoded_arrays` has them), stage 1's selection and
    stage 2's class weights come from them; otherwise from the shards' id and label columns.
    `space`: stage 2's labels when they are not the shards' (zero-shot trains on a subset of
    classes)."""
    kind = stage_type(job.stage)  # first: an unknown stage fails before any shard is read
    parts = (job.train_parts or ()) + (job.test_parts or ())
    for d in job.datasets:
        _check_parts(cfg.data.shard_dir, d, parts, arrays)
    return kind.plan_job(cfg, job, arrays, space)


def _check_parts(
    shard_dir: Where, dataset: str, parts: tuple[int, ...], arrays: dict[str, np.ndarray] | None
) -> None:
    """One clear error for a fold part without rows (a wrong part number, or a preprocessing
    that lost a part's subjects), before any worker starts: the parts of `arrays` when the
    rows come from them, else those the shards' manifest counts."""
    if not parts:
        return
    if arrays is not None:
        held = {int(p) for p in np.unique(arrays["part"])}
    else:
        held = {p for p, n in read_manifest(shard_dir, dataset).rows_per_part.items() if n > 0}
    missing = sorted(set(parts) - held)
    if missing:
        raise ClefError(
            f"{dataset}: no rows in fold part(s) {', '.join(map(str, missing))} of {shard_dir}; "
            f"expected parts with rows, found {', '.join(map(str, sorted(held))) or 'none'}"
            " (0-based: fold k tests on part k-1)"
        )


class Stage(ABC):
    """One stage of the method, as every worker runs it (the plan says what it reads). The two
    kinds, `Pretraining` (stage 1) and `FineTuning` (stage 2), carry everything that differs
    between them, so callers ask the stage and never test its number; `make_stage` picks one."""

    number: ClassVar[int]  # 1 or 2: the config section's name and the checkpoint's meta
    views: ClassVar[int]  # augmented views of each image the step takes

    def __init__(self, cfg: ExperimentConfig, plan: StagePlan):
        self.cfg, self.plan = cfg, plan
        # Resolved here: a dataset without a stage-2 rate fails on the driver, not a worker.
        self.lr = self.peak_lr()

    @classmethod
    @abstractmethod
    def plan_job(
        cls,
        cfg: ExperimentConfig,
        job: StageJob,
        arrays: dict[str, np.ndarray] | None,
        space: LabelSpace | None,
    ) -> StagePlan:
        """The rows `job` reads (`plan_stage` has checked its fold parts)."""

    @property
    @abstractmethod
    def hp(self) -> Stage1Config | Stage2Config:
        """The stage's section of the config: epochs, batch, schedule, augmentation."""

    @abstractmethod
    def peak_lr(self) -> float:
        """The learning rate the schedule warms up to."""

    @abstractmethod
    def step_fn(
        self, model: nn.Module, device: torch.device, rng_seed: int, gather: Gather = no_gather
    ) -> StepFn:
        """The training step on one batch of model views: its loss and the loss's parts."""

    @property
    def augment(self) -> AugmentConfig:
        return self.hp.augment

    @property
    def activity_index(self) -> dict[str, int] | None:
        """The activity label of each "dataset/task", when the inputs must carry one (stage 1)."""
        return None

    @functools.cached_property
    def tokenizer(self) -> Callable:
        return tokenizer_for(self.cfg.model)

    @property
    def space(self) -> LabelSpace | None:
        return self.plan.space

    def build_model(self) -> ClefModel:
        """The model this stage starts from (before any weights are loaded into it)."""
        cfg = self.cfg
        return build_model(cfg.model, cfg.stage2.logit_scale_init, cfg.stage2.logit_scale_max)

    def optimizer(self, model: nn.Module) -> torch.optim.AdamW:
        return make_optimizer(model, self.lr, self.hp.weight_decay)

    def batch_per_worker(self, workers: int) -> int:
        """The per-worker (per-GPU) batch: the stage's batch_size is the global batch (the
        paper's 64; stage 1's contrastive loss is over all of it), split evenly."""
        batch = self.hp.batch_size
        if batch % workers:
            raise ClefError(
                f"stage{self.number}.batch_size={batch} is the global batch and must split "
                f"evenly over compute.num_workers={workers} workers; give a multiple of {workers}"
            )
        return batch // workers

    def steps_per_epoch(self, rows: int) -> int:
        """The configured steps, or one pass over `rows` training rows at the global batch."""
        return self.hp.steps_per_epoch or max(1, rows // self.hp.batch_size)

    def lr_schedule(self, steps_per_epoch: int) -> Callable[[int], float]:
        total = steps_per_epoch * self.hp.epochs
        warm = int(self.hp.warmup_epochs * steps_per_epoch)
        return lambda s: warmup_cosine(s, total, warm, self.lr, self.hp.min_lr)

    def evaluates(self, epoch: int) -> bool:
        """Whether the held-out rows are scored after `epoch` (`heldout`)."""
        return False

    def heldout(
        self, model: ClefModel, batches: Iterable[Batch], device: torch.device, precision: str
    ) -> tuple[Predictions, dict[str, float]]:
        """The held-out predictions and their metrics; only a stage that `evaluates` has them."""
        raise ClefError(f"stage {self.number} has no held-out rows to score")

    def save(
        self,
        directory: Path,
        model: ClefModel,
        optimizer: torch.optim.Optimizer,
        step: int,
        epoch: int,
        predictions: Predictions | None = None,
    ) -> Path:
        """The checkpoint: the (unwrapped) model's weights, the optimiser, meta.json (stage,
        step, epoch, label space, head, config) and, when given, the held-out predictions."""
        save_checkpoint(directory, model, self.cfg, self.number, step, epoch, self.space, optimizer)
        if predictions is not None:
            save_predictions(directory / "predictions.npz", predictions)
        return directory


class Pretraining(Stage):
    """Stage 1: activity-supervised cross-modal contrastive pre-training (Eq. 1-2) on two
    augmented views of each image, labelled by its activity; no held-out scoring."""

    number = 1
    views = 2  # x and x~ (Eq. 1's alpha and beta for L_II)

    @classmethod
    def plan_job(
        cls,
        cfg: ExperimentConfig,
        job: StageJob,
        arrays: dict[str, np.ndarray] | None,
        space: LabelSpace | None,
    ) -> StagePlan:
        """The activity rows of `job`'s sources: BP4D's coded frames, a capped sample per
        BP4D+ activity (`selection`); the labels are every (dataset, task) in a fixed order."""
        shard_dir, cap = cfg.data.shard_dir, cfg.stage1.frames_per_activity
        splits, rows = [], 0
        record: dict[str, float] = {}
        for d in job.datasets:
            if arrays is not None:
                sel = select_stage1(d, arrays, job.train_parts, cap)
            else:
                sel = stage1_rows(shard_dir, d, job.train_parts, cap)
            record |= sel.record()
            rows += sel.rows
            splits.append(Split(d, job.train_parts, sel.labels, sel.limit))
        activities = tuple(activities_of(shard_dir, job.datasets))
        return StagePlan(cls.number, tuple(splits), rows, activities=activities, record=record)

    @property
    def hp(self) -> Stage1Config:
        return self.cfg.stage1

    def peak_lr(self) -> float:
        return self.cfg.stage1.lr

    @property
    def activity_index(self) -> dict[str, int]:
        return {f"{d}/{t}": i for i, (d, t) in enumerate(self.plan.activities)}

    def step_fn(
        self, model: nn.Module, device: torch.device, rng_seed: int, gather: Gather = no_gather
    ) -> StepFn:
        tok, s1 = self.tokenizer, self.cfg.stage1
        rng = random.Random(rng_seed)  # draws the activity prompts' templates
        activities = list(self.plan.activities)
        return lambda b: pretrain_step(model, b, tok, activities, s1, rng, gather)


class FineTuning(Stage):
    """Stage 2: fine-tuning one dataset against its label names and descriptions (Eq. 3-6),
    or a linear head (ablation), with class weights; scores its held-out rows."""

    number = 2
    views = 1

    def __init__(self, cfg: ExperimentConfig, plan: StagePlan):
        super().__init__(cfg, plan)
        if plan.space is None or plan.weights is None:
            raise ClefError("a stage-2 plan needs its label space and class weights")
        self.labels: LabelSpace = plan.space

    @classmethod
    def plan_job(
        cls,
        cfg: ExperimentConfig,
        job: StageJob,
        arrays: dict[str, np.ndarray] | None,
        space: LabelSpace | None,
    ) -> StagePlan:
        """One dataset's labelled training rows (a `label_fraction` of its subjects) and test
        rows, its label space, and class weights from the kept training labels."""
        shard_dir, dataset = cfg.data.shard_dir, job.datasets[0]
        space = space or shard_label_space(shard_dir, dataset)
        column = space.column
        if arrays is not None:
            mask = split_mask(arrays, job.train_parts, column)
            # arrays made in code (tests) may have no subjects: only a label fraction needs them
            who = arrays["subject"][mask] if "subject" in arrays else None
            values = arrays[column][mask]
        else:
            who, values = _shard_labels(shard_dir, dataset, job.train_parts, column)
        keep = None
        if cfg.stage2.label_fraction < 1:  # fewer labelled subjects; weights from the kept rows
            if who is None:
                raise ClefError("stage2.label_fraction < 1 needs the rows' subject column")
            keep = label_subjects(who, cfg.stage2.label_fraction, cfg.stage2.label_seed)
            values = values[np.isin(who, keep)]
        return StagePlan(
            cls.number,
            (Split(dataset, job.train_parts, column, subjects=keep),),
            len(values),
            test=Split(dataset, job.test_parts, column),
            space=space,
            weights=_class_weights(values, space),
        )

    @property
    def hp(self) -> Stage2Config:
        return self.cfg.stage2

    def peak_lr(self) -> float:
        return self.cfg.stage2.lr_for(self.plan.train[0].dataset)  # the paper's per-dataset rate

    def build_model(self) -> ClefModel:
        model = super().build_model()
        if self.cfg.stage2.head == "linear":  # the ablation without N and D
            model.set_linear_head(self.labels.n)
        return model

    def step_fn(
        self, model: nn.Module, device: torch.device, rng_seed: int, gather: Gather = no_gather
    ) -> StepFn:
        # No gather: each worker's loss is its own batch's, DDP averages the gradients.
        tok, space, s2 = self.tokenizer, self.labels, self.cfg.stage2
        rng = random.Random(rng_seed)  # draws the descriptions and their templates
        assert self.plan.weights is not None  # checked in __init__
        weights = torch.tensor(self.plan.weights, dtype=torch.float32, device=device)
        return lambda b: finetune_step(model, b, tok, space, s2, weights, rng)

    def evaluates(self, epoch: int) -> bool:
        """After the last epoch (the fold's result: no model selection on the test part), and
        after each epoch when asked (the curves)."""
        return epoch == self.hp.epochs - 1 or self.cfg.stage2.eval_every_epoch

    def score(self, pred: Predictions) -> dict[str, float]:
        """Held-out metrics: f1_mean (AUs) or accuracy (expressions), their baselines, AUC."""
        return metrics_of(pred, self.labels, self.cfg.stage2.threshold)

    def heldout(
        self, model: ClefModel, batches: Iterable[Batch], device: torch.device, precision: str
    ) -> tuple[Predictions, dict[str, float]]:
        pred = predict(model, batches, self.tokenizer, self.labels, device, precision)
        return pred, self.score(pred)


# The one place a stage's number becomes its behaviour.
STAGES: dict[int, type[Stage]] = {1: Pretraining, 2: FineTuning}


def stage_type(number: int) -> type[Stage]:
    """The `Stage` kind of stage `number` (1 or 2)."""
    if number not in STAGES:
        raise ClefError(f"stage must be 1 or 2, got {number}")
    return STAGES[number]


def make_stage(cfg: ExperimentConfig, plan: StagePlan) -> Stage:
    """The stage `plan` was made for, as every worker (and the in-process runner) runs it."""
    return stage_type(plan.stage)(cfg, plan)
