"""Zero-shot experiments (DESIGN.md; the CLEF poster, ICCV 2023, gives the figures): a model
fine-tuned against label names scores classes it never trained on by their names' text
features alone.

1. Expressions, seen -> unseen: stage 2 on the training rows of some expressions of a FER
   dataset (its label space is those classes only), tested on the test rows of the others.
2. AUs -> expressions: stage 2 on an AU dataset's training parts (AU names), tested on each
   FER dataset's test rows (one training, scored on every dataset asked for).

Each runs as two rows, as the poster does: "CLEF" (stage 1 first, the one the protocol's
stage 2 of that dataset starts from, `protocol.stage2_unit`: BP4D+ on every part for a FER
dataset, BP4D fold 1 for BP4D's AUs) and "FaRL" (no stage 1: stage 2 from the config's
initial weights, `model.init_weights`; from scratch when none is given, as in the demo,
where the row is no FaRL at all but the no-stage-1 control).

Each test frame is scored by "a photo of a person with {name}." of every class of the
dataset, two ways (`score_both`): "unseen", the arg-max among the unseen classes only, and
"all", the arg-max among every class (generalised: a seen class may win, and is then wrong).
In experiment 2 every class is unseen, so the two are the same.

Ours, where the paper and poster say no more: the seen classes (happiness, sadness, surprise,
anger: the four the BP4D activities target; the rest unseen), one split; the steps (the
config's stage 1 and stage 2 schedules); which stage-1 model (the protocol's, above; an AU
dataset that starts from another's stage 2, DISFA, takes the stage 1 of that chain, BP4D's);
the two scorings, both on the unseen classes' test frames; several seeds (`seeds`), each
training stage 1 and 2 again. All in one process (`clef_core.training.local`: the same steps,
losses, schedule and augmentation as the Ray loop). What judges an accuracy: chance (1 /
classes scored) and the largest tested class's share (the best constant answer; it uses the
test labels, so no model can be credited for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from clef_core.common.datasets import REGISTRY
from clef_core.common.errors import ClefError
from clef_core.common.manifest import read_manifest
from clef_core.common.results import ZS_AU_TO_FER, ZS_UNSEEN
from clef_core.method.config import ExperimentConfig
from clef_core.method.labels import LabelSpace
from clef_core.method.metrics import accuracy, macro_ovr_auc
from clef_core.method.model import ClefModel, tokenizer_for
from clef_core.method.steps import OnStep, predict
from clef_core.training.cache import cached_split, decoded_arrays, source_size
from clef_core.training.local import CPU, column_batches, run_local_stage
from clef_core.training.protocol import (
    ZEROSHOT_AU,
    ZEROSHOT_FERS,
    Unit,
    stage1_of,
    stage2_unit,
)

SEEN = ("happiness", "sadness", "surprise", "anger")  # ours: the BP4D activities' targets
ROWS = ("CLEF", "FaRL")  # the poster's rows: stage 1 first, or not


@dataclass
class ZeroShotResult:
    experiment: str  # ZS_UNSEEN or ZS_AU_TO_FER (`clef_core.common.results`)
    dataset: str  # the FER dataset tested
    row: str  # "CLEF" (stage 1, then stage 2) or "FaRL" (stage 2 only)
    seed: int
    trained_on: str  # dataset: classes (or AUs) of the training labels
    tested_on: str  # dataset: the classes of the frames scored, none of them trained on
    start: str  # what stage 2 started from
    frames: int  # test frames scored
    accuracy_unseen: float  # arg-max among the unseen classes' name features
    accuracy_all: float  # arg-max among every class's name features
    chance_unseen: float  # 1 / unseen classes
    chance_all: float  # 1 / classes
    largest_class: float  # share of the most frequent tested class
    auc_unseen: float  # macro one-vs-rest ROC-AUC of the unseen classes' probabilities
    auc_all: float  # the same of every class's probabilities (nan when undefined)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_both(scores: np.ndarray, targets: np.ndarray, unseen: Sequence[int]) -> dict[str, float]:
    """Both scorings of softmax `scores` [N, C] over every class of a dataset; `targets` [N]
    are class indices, each one of `unseen` (the columns of the classes never trained on).
    "unseen": arg-max among the `unseen` columns (probabilities renormalised over them);
    "all": arg-max among every column, so a seen class that wins counts as an error."""
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets, np.int64)
    if len(targets) == 0 or not np.isin(targets, unseen).all():
        raise ClefError("zero-shot scoring: every test frame must be of an unseen class")
    lookup = np.full(scores.shape[1], -1, np.int64)
    lookup[list(unseen)] = np.arange(len(unseen))
    sub = scores[:, list(unseen)]
    sub = sub / sub.sum(1, keepdims=True)  # [N, U]: softmax over the unseen logits only
    counts = np.bincount(targets, minlength=scores.shape[1])
    return {
        "accuracy_unseen": accuracy(sub.argmax(1), lookup[targets]),
        "accuracy_all": accuracy(scores.argmax(1), targets),
        "chance_unseen": 1 / len(unseen),
        "chance_all": 1 / scores.shape[1],
        "largest_class": float(counts.max() / counts.sum()),
        "auc_unseen": macro_ovr_auc(sub, lookup[targets])[0],
        "auc_all": macro_ovr_auc(scores, targets)[0],
    }


def _arrays(cfg: ExperimentConfig, dataset: str) -> dict[str, np.ndarray]:
    side = source_size(cfg.model.image_size, cfg.stage1.augment, cfg.stage2.augment)
    return decoded_arrays(cfg.data.shard_dir, dataset, side)


def _rows(arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The rows where `keep` [N] is true (per-dataset columns, e.g. task names, kept whole)."""
    n = len(keep)
    return {k: v[keep] if len(v) == n else v for k, v in arrays.items()}


def _classes_subset(
    arrays: dict[str, np.ndarray], classes: list[str], keep: list[str]
) -> dict[str, np.ndarray]:
    """The rows labelled with one of `keep`, their expression re-indexed into `keep`."""
    lookup = np.full(len(classes) + 1, -1, np.int64)  # index -1 (unlabelled) maps to -1
    for i, name in enumerate(keep):
        lookup[classes.index(name)] = i
    expression = lookup[arrays["expression"].astype(np.int64)]
    out = _rows(arrays, expression >= 0)
    out["expression"] = expression[expression >= 0].astype(arrays["expression"].dtype)
    return out


def _score(
    model: ClefModel, cfg: ExperimentConfig, dataset: str, unseen: list[str], device: torch.device
) -> tuple[int, dict[str, float]]:
    """Frames and `score_both` of `dataset`'s test rows of the `unseen` classes, each scored
    against every class of the dataset (on `device`, where `model` is)."""
    classes = read_manifest(cfg.data.shard_dir, dataset).classes
    index = [classes.index(c) for c in unseen]
    test = cached_split(_arrays(cfg, dataset), (1,), "expression")
    test = _rows(test, np.isin(test["expression"], index))
    if len(test["expression"]) == 0:
        raise ClefError(f"zero-shot: no test frame of {dataset}'s {', '.join(unseen)}")
    space = LabelSpace.expressions(classes)
    batches = column_batches(test, 256, shuffle=False)
    pred = predict(
        model, batches, tokenizer_for(model.config), space, device, cfg.compute.precision
    )
    return len(pred.targets), score_both(pred.scores, pred.targets, index)


class Starts:
    """What each row's stage 2 starts from, for one config (seed): the stage-1 models,
    each trained once on first use and shared by the experiments that start from it. Every
    training and scoring of the experiments runs on its `device`."""

    def __init__(
        self, cfg: ExperimentConfig, on_step: OnStep | None, device: torch.device = CPU
    ) -> None:
        self.cfg, self.on_step, self.device = cfg, on_step, device
        self.models: dict[Unit, ClefModel] = {}

    def model(self, row: str, dataset: str) -> ClefModel | None:
        """The stage-1 model the protocol starts `dataset`'s stage 2 from (row "CLEF"), or
        None: the config's initial weights (row "FaRL")."""
        if row == "FaRL":
            return None
        unit = stage1_of(dataset)
        if unit not in self.models:
            self.models[unit] = run_local_stage(
                self.cfg, 1, unit.dataset, unit.train_parts, on_step=self.on_step,
                device=self.device,
            ).model  # fmt: skip
        return self.models[unit]

    def name(self, row: str, dataset: str) -> str:
        """What `model` gives, in words."""
        if row == "FaRL":
            weights = self.cfg.model.init_weights
            return f"no stage 1: {weights}" if weights else "no stage 1: from scratch"
        unit = stage1_of(dataset)
        parts = "every part" if unit.fold is None else f"fold {unit.fold}"
        return f"stage 1 on {unit.dataset} ({parts})"


def _names(labels: Sequence[object]) -> str:
    return ", ".join(str(label) for label in labels)


def _seen_unseen(
    cfg: ExperimentConfig, dataset: str, seen: list[str] | None
) -> tuple[list[str], list[str]]:
    classes = read_manifest(cfg.data.shard_dir, dataset).classes
    chosen = [c for c in SEEN if c in classes] if seen is None else seen
    bad = [c for c in chosen if c not in classes]
    unseen = [c for c in classes if c not in chosen]
    if bad or len(chosen) < 2 or not unseen:
        raise ClefError(
            f"zero-shot: seen classes must be 2 or more of {dataset}'s {classes} and leave "
            f"some unseen; got {chosen}"
        )
    return chosen, unseen


def unseen_expressions(
    cfg: ExperimentConfig,
    dataset: str,
    seen: list[str] | None = None,
    row: str = "FaRL",
    starts: Starts | None = None,
    on_step: OnStep | None = None,
    device: torch.device = CPU,
) -> ZeroShotResult:
    """Experiment 1: stage 2 on `seen` expressions of `dataset`, test on the others (on
    `starts.device`, or `device` without `starts`)."""
    check(cfg, [dataset], [row])
    seen, unseen = _seen_unseen(cfg, dataset, seen)
    starts = starts or Starts(cfg, on_step, device)
    arrays = _arrays(cfg, dataset)
    train = _classes_subset(arrays, read_manifest(cfg.data.shard_dir, dataset).classes, seen)
    model = run_local_stage(
        cfg, 2, dataset, (0,), init=starts.model(row, dataset), on_step=starts.on_step,
        arrays=train, space=LabelSpace.expressions(seen), device=starts.device,
    ).model  # fmt: skip
    frames, scores = _score(model, cfg, dataset, unseen, starts.device)
    return ZeroShotResult(
        ZS_UNSEEN, dataset, row, cfg.seed, f"{dataset}: {_names(seen)}",
        f"{dataset}: {_names(unseen)}", starts.name(row, dataset), frames, **scores,
    )  # fmt: skip


def aus_to_expressions(
    cfg: ExperimentConfig,
    au_dataset: str = ZEROSHOT_AU,
    datasets: Sequence[str] = ZEROSHOT_FERS,
    row: str = "FaRL",
    starts: Starts | None = None,
    on_step: OnStep | None = None,
    device: torch.device = CPU,
) -> list[ZeroShotResult]:
    """Experiment 2: stage 2 on `au_dataset`'s AUs (fold 1's training parts), then each of
    `datasets`' test rows, every expression scored by its name (one result per dataset; on
    `starts.device`, or `device` without `starts`)."""
    check(cfg, datasets, [row])
    starts = starts or Starts(cfg, on_step, device)
    unit = stage2_unit(au_dataset, 1, False)
    model = run_local_stage(
        cfg, 2, au_dataset, unit.train_parts, init=starts.model(row, au_dataset),
        on_step=starts.on_step, device=starts.device,
    ).model  # fmt: skip
    au_ids = read_manifest(cfg.data.shard_dir, au_dataset).au_ids
    results = []
    for dataset in datasets:
        classes = read_manifest(cfg.data.shard_dir, dataset).classes
        frames, scores = _score(model, cfg, dataset, classes, starts.device)
        results.append(ZeroShotResult(
            ZS_AU_TO_FER, dataset, row, cfg.seed, f"{au_dataset} fold 1: {len(au_ids)} AUs",
            f"{dataset}: {_names(classes)}", starts.name(row, au_dataset), frames, **scores,
        ))  # fmt: skip
    return results


def check(cfg: ExperimentConfig, datasets: Sequence[str], rows: Sequence[str]) -> None:
    """One ClefError for a setting the experiments cannot run with."""
    if cfg.stage2.head != "names":
        raise ClefError("zero-shot needs stage2.head=names: a linear head has no text to score")
    bad = [d for d in datasets if d not in REGISTRY or REGISTRY[d].task != "fer"]
    if bad or not datasets:
        fer = [d for d in REGISTRY if REGISTRY[d].task == "fer"]
        raise ClefError(f"zero-shot: datasets must be FER datasets ({', '.join(fer)}); got {bad}")
    if not rows or any(r not in ROWS for r in rows):
        raise ClefError(f"zero-shot: rows must be among {', '.join(ROWS)}; got {list(rows)}")
    if "CLEF" in rows and cfg.stage1.epochs == 0:
        raise ClefError("zero-shot row CLEF runs stage 1 first: stage1.epochs must be 1 or more")


def run_zeroshot(
    cfg: ExperimentConfig,
    datasets: Sequence[str] = ZEROSHOT_FERS,
    au_dataset: str = ZEROSHOT_AU,
    seen: list[str] | None = None,
    rows: Sequence[str] = ROWS,
    seeds: Sequence[int] | None = None,
    on_step: OnStep | None = None,
    device: torch.device = CPU,
) -> list[ZeroShotResult]:
    """Both experiments on every dataset, for every row and seed (default: the config's), on
    `device` (the caller's choice; CPU when it makes none); every setting is checked before
    any training; `on_step` is called after every step."""
    check(cfg, datasets, rows)
    for dataset in datasets:
        _seen_unseen(cfg, dataset, seen)
    results: list[ZeroShotResult] = []
    for seed in seeds if seeds else [cfg.seed]:
        run = cfg.model_copy(update={"seed": seed})
        starts = Starts(run, on_step, device)  # stage 1 once per seed, shared by the experiments
        for row in rows:
            results += [unseen_expressions(run, d, seen, row, starts) for d in datasets]
            results += aus_to_expressions(run, au_dataset, datasets, row, starts)
    return results


def steps(
    cfg: ExperimentConfig,
    datasets: Sequence[str] = ZEROSHOT_FERS,
    au_dataset: str = ZEROSHOT_AU,
    rows: Sequence[str] = ROWS,
    seeds: int = 1,
) -> int | None:
    """Training steps of `run_zeroshot` when the config fixes them (steps_per_epoch)."""
    s1, s2 = cfg.stage1, cfg.stage2
    if not s2.steps_per_epoch or ("CLEF" in rows and not s1.steps_per_epoch):
        return None
    stage2 = len(rows) * (len(datasets) + 1) * s2.steps_per_epoch * s2.epochs
    units = {stage1_of(d) for d in (*datasets, au_dataset)} if "CLEF" in rows else set()
    return seeds * (stage2 + len(units) * (s1.steps_per_epoch or 0) * s1.epochs)
