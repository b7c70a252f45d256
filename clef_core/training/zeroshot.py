"""Zero-shot experiments (DESIGN.md; the poster): a model fine-tuned against label names
scores classes it never trained on by their names' text features alone.

1. Expressions, seen -> unseen: stage 2 on the training rows of some expressions of a FER
   dataset (its label space is those classes only), tested on the test rows of the others,
   each scored by "a photo of a person with {name}." of the unseen classes (arg-max among
   them: the classes never seen in training).
2. AUs -> expressions: stage 2 on an AU dataset's training parts (AU names), tested on a FER
   dataset's test rows, each expression scored by its name's text feature.

Ours, where the paper and poster say no more: the seen classes (happiness, sadness, surprise,
anger: the four the BP4D activities target; the rest unseen), stage 2 only (no stage 1; the
model starts from the config's initial weights), in one process (`clef_core.training.local`: the same
steps, losses, schedule and augmentation as the Ray loop), one seed, one split. What judges
the accuracy: chance (1 / classes) and the largest tested class's share (what the best
constant answer would score; it uses the test labels, so no model can be credited for it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from clef_core.common.errors import ClefError
from clef_core.common.manifest import read_manifest
from clef_core.method.config import ExperimentConfig
from clef_core.method.labels import LabelSpace
from clef_core.method.model import ClefModel, tokenizer_for
from clef_core.method.steps import OnStep, Predictions, metrics_of, predict
from clef_core.training.cache import cached_split, decoded_arrays, source_size
from clef_core.training.local import column_batches, run_local_stage
from clef_core.training.protocol import ZEROSHOT_AU, ZEROSHOT_FER, stage2_unit

SEEN = ("happiness", "sadness", "surprise", "anger")  # ours: the BP4D activities' targets
CPU = torch.device("cpu")


@dataclass
class ZeroShotResult:
    experiment: str  # "expressions: seen -> unseen" or "AUs -> expressions"
    trained_on: str  # dataset: classes (or AUs) of the training labels
    tested_on: str  # dataset: the classes scored, none of them trained on
    frames: int  # test frames scored
    accuracy: float  # arg-max over the tested classes' name features
    chance: float  # 1 / tested classes
    largest_class: float  # share of the most frequent tested class
    auc_macro: float  # one-vs-rest ROC-AUC of the class probabilities (nan when undefined)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _arrays(cfg: ExperimentConfig, dataset: str) -> dict[str, np.ndarray]:
    side = source_size(cfg.model.image_size, cfg.stage1.augment, cfg.stage2.augment)
    return decoded_arrays(cfg.data.shard_dir, dataset, side)


def _classes_subset(
    arrays: dict[str, np.ndarray], classes: list[str], keep: list[str]
) -> dict[str, np.ndarray]:
    """The rows labelled with one of `keep`, their expression re-indexed into `keep`."""
    lookup = np.full(len(classes) + 1, -1, np.int64)  # index -1 (unlabelled) maps to -1
    for i, name in enumerate(keep):
        lookup[classes.index(name)] = i
    expression = lookup[arrays["expression"].astype(np.int64)]
    rows = expression >= 0
    n = len(arrays["expression"])
    out = {k: v[rows] if len(v) == n else v for k, v in arrays.items()}
    out["expression"] = expression[rows].astype(arrays["expression"].dtype)
    return out


def _score(
    model: ClefModel, rows: dict[str, np.ndarray], space: LabelSpace, cfg: ExperimentConfig
) -> Predictions:
    batches = column_batches(rows, 256, shuffle=False)
    return predict(model, batches, tokenizer_for(model.config), space, CPU, cfg.compute.precision)


def _result(
    experiment: str, trained_on: str, tested: str, pred: Predictions, space: LabelSpace
) -> ZeroShotResult:
    if len(pred.targets) == 0:
        raise ClefError(f"zero-shot {experiment}: no test frame of {tested}")
    m = metrics_of(pred, space)
    counts = np.bincount(pred.targets, minlength=space.n)
    return ZeroShotResult(
        experiment, trained_on, tested, len(pred.targets), m["accuracy"], 1 / space.n,
        float(counts.max() / counts.sum()), m.get("auc_macro", float("nan")),
    )  # fmt: skip


def _names(labels: list[str] | tuple) -> str:
    return ", ".join(str(label) for label in labels)


def _check_head(cfg: ExperimentConfig) -> None:
    if cfg.stage2.head != "names":
        raise ClefError("zero-shot needs stage2.head=names: a linear head has no text to score")


def unseen_expressions(
    cfg: ExperimentConfig,
    dataset: str = ZEROSHOT_FER,
    seen: list[str] | None = None,
    on_step: OnStep | None = None,
) -> ZeroShotResult:
    """Experiment 1: train on `seen` expressions of `dataset`, test on the others."""
    _check_head(cfg)
    classes = read_manifest(cfg.data.shard_dir, dataset).classes
    if seen is None:
        seen = [c for c in SEEN if c in classes]
    bad = [c for c in seen if c not in classes]
    unseen = [c for c in classes if c not in seen]
    if bad or len(seen) < 2 or not unseen:
        raise ClefError(
            f"zero-shot: seen classes must be 2 or more of {dataset}'s {classes} and leave "
            f"some unseen; got {seen}"
        )
    arrays = _arrays(cfg, dataset)
    train = _classes_subset(arrays, classes, seen)
    model = run_local_stage(
        cfg, 2, dataset, (0,), on_step=on_step, arrays=train, space=LabelSpace.expressions(seen)
    ).model
    space = LabelSpace.expressions(unseen)
    test = cached_split(_classes_subset(arrays, classes, unseen), (1,), "expression")
    return _result(
        "expressions: seen -> unseen", f"{dataset}: {_names(seen)}",
        f"{dataset}: {_names(unseen)}", _score(model, test, space, cfg), space,
    )  # fmt: skip


def aus_to_expressions(
    cfg: ExperimentConfig,
    au_dataset: str = ZEROSHOT_AU,
    fer_dataset: str = ZEROSHOT_FER,
    fold: int = 1,
    on_step: OnStep | None = None,
) -> ZeroShotResult:
    """Experiment 2: train on `au_dataset`'s AUs (fold `fold`'s training parts), test on
    `fer_dataset`'s test rows, every expression scored by its name."""
    _check_head(cfg)
    unit = stage2_unit(au_dataset, fold, False)
    model = run_local_stage(cfg, 2, au_dataset, unit.train_parts, on_step=on_step).model
    classes = read_manifest(cfg.data.shard_dir, fer_dataset).classes
    space = LabelSpace.expressions(classes)
    test = cached_split(_arrays(cfg, fer_dataset), (1,), "expression")
    au_ids = read_manifest(cfg.data.shard_dir, au_dataset).au_ids
    return _result(
        "AUs -> expressions", f"{au_dataset} fold {fold}: {len(au_ids)} AUs",
        f"{fer_dataset}: {_names(classes)}", _score(model, test, space, cfg), space,
    )  # fmt: skip


def run_zeroshot(
    cfg: ExperimentConfig,
    dataset: str = ZEROSHOT_FER,
    au_dataset: str = ZEROSHOT_AU,
    seen: list[str] | None = None,
    on_step: OnStep | None = None,
) -> list[ZeroShotResult]:
    """Both experiments, with the config's seed and schedule (`steps` training steps each);
    `on_step` is called after every training step of either."""
    torch.manual_seed(cfg.seed)
    return [
        unseen_expressions(cfg, dataset, seen, on_step),
        aus_to_expressions(cfg, au_dataset, dataset, on_step=on_step),
    ]


def steps(cfg: ExperimentConfig) -> int | None:
    """Training steps of one experiment when the config fixes them (steps_per_epoch)."""
    per_epoch = cfg.stage2.steps_per_epoch
    return per_epoch * cfg.stage2.epochs if per_epoch else None
