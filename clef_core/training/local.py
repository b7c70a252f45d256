"""Both CLEF stages in one process on the decoded arrays (`clef_core.training.cache`): the same
stage (`stages`), runner loop (`loop.run_loop`: model, steps, losses, schedule, worker-side
augmentation) as a Ray Train worker, without Ray or MLflow. For many short runs where a worker
group's start-up would cost more than the training: the learning test, the zero-shot
experiments and `bench/ablation.py`.

Differences from `ray_train`: one process (so stage 1's batch is the whole batch, no gather),
and each epoch visits the training rows in a fresh seeded permutation (a full shuffle, where
the Ray path mixes with a shuffle buffer).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from clef_core.method.config import ExperimentConfig
from clef_core.method.labels import LabelSpace
from clef_core.method.model import ClefModel
from clef_core.method.steps import OnStep, Predictions, metrics_of
from clef_core.training.cache import cached_split, decoded_arrays, source_size
from clef_core.training.loop import EpochEnd, Feed, run_loop
from clef_core.training.stages import StageJob, make_stage, plan_stage

# The device of a caller that names none: these runs were CPU-only before they took one.
CPU = torch.device("cpu")


@dataclass
class LocalResult:
    model: ClefModel
    losses: list[float]  # training loss of every step
    predictions: Predictions | None = None  # stage 2: on the test parts
    metrics: dict[str, float] | None = None  # stage 2: metrics_of(predictions)


def column_batches(
    columns: dict[str, np.ndarray], batch: int, seed: int = 0, shuffle: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Tensor batches of in-memory columns (`cache.cached_split`'s): shuffled with the last
    partial batch dropped for training; in order and whole for scoring (`shuffle=False`)."""
    n = len(columns["image"])
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - batch + 1 if shuffle else n  # training drops the last partial batch
    for start in range(0, max(stop, 0), batch):
        idx = order[start : start + batch]
        yield {k: torch.from_numpy(v[idx]) for k, v in columns.items()}


def run_local_stage(
    cfg: ExperimentConfig,
    stage: int,
    dataset: str,
    train_parts: tuple[int, ...] | None,
    test_parts: tuple[int, ...] | None = None,
    init: ClefModel | None = None,
    on_step: OnStep | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    space: LabelSpace | None = None,
    device: torch.device = CPU,
) -> LocalResult:
    """Train one stage on `dataset`'s `train_parts` (stage 2: then score `test_parts`) on
    `device` (the caller's: nothing here picks one).

    The rows are the dataset's decoded shards, or `arrays` when given (columns as
    `cache.decoded_arrays` has them; stage 2 then needs `space`, the labels of its `au`)."""
    if arrays is None:
        side = source_size(cfg.model.image_size, cfg.stage1.augment, cfg.stage2.augment)
        arrays = decoded_arrays(cfg.data.shard_dir, dataset, side)
    plan = plan_stage(cfg, StageJob(stage, (dataset,), train_parts, test_parts), arrays, space)
    run = make_stage(cfg, plan)
    (split,) = plan.train
    train = cached_split(
        arrays, split.parts, split.labels, run.activity_index, split.limit, None, split.subjects
    )
    torch.manual_seed(cfg.seed)
    model = run.build_model()
    if init is not None:
        _load_matching(model, init)
    batch = run.hp.batch_size

    def passes(epoch: int, k: int, done: int) -> Iterator[dict[str, torch.Tensor]]:
        # A fresh permutation for every pass.
        return column_batches(train, batch, cfg.seed + 1000 * epoch + done)

    test = None
    if plan.test is not None and test_parts is not None:
        rows = cached_split(arrays, plan.test.parts, plan.test.labels)
        test = lambda: column_batches(rows, 256, shuffle=False)  # noqa: E731
    losses: list[float] = []
    result = LocalResult(model, losses)

    def record(step: int, parts: dict[str, float]) -> None:
        losses.append(parts["loss"])
        if on_step is not None:
            on_step(step, parts)

    def keep(end: EpochEnd) -> None:
        if end.last and end.predictions is not None:
            result.predictions = end.predictions
            result.metrics = end.scores

    feed = Feed(passes, run.steps_per_epoch(len(train["image"])), test)
    model.to(device)  # before the optimiser, which holds its parameters
    run_loop(run, model, run.optimizer(model), feed, device, on_step=record, on_epoch=keep)
    return result


def _load_matching(model: ClefModel, init: ClefModel) -> None:
    """`init`'s weights that `model` has with the same shape, like load_weights(strict=False):
    stage 1 -> stage 2 carries the backbone, a new head keeps its own."""
    own = model.state_dict()
    model.load_state_dict(
        {k: v for k, v in init.state_dict().items() if k in own and v.shape == own[k].shape},
        strict=False,
    )


def heldout_scores(pred: Predictions, threshold: float = 0.5) -> dict[str, float]:
    """What shows whether an AU model learned (`train.metrics_of`): mean F1 at `threshold`,
    the F1 of predicting every AU present over the same AUs, and the mean per-AU ROC-AUC."""
    space = LabelSpace("au", tuple(range(pred.targets.shape[1])))  # positions as ids
    m = metrics_of(pred, space, threshold)
    return {"f1": m["f1_mean"], "always_f1": m["f1_baseline_mean"], "auc": m["auc_mean"]}
