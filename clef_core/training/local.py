"""Both CLEF stages in one process on the decoded arrays (`clef_core.training.cache`): the same model,
steps, losses, schedule and worker-side augmentation as the Ray Train loop, without Ray or
MLflow. For many short runs where a worker group's start-up would cost more than the
training: the learning test and `bench/ablation.py`.

Differences from `ray_train`: one process (so stage 1's batch is the whole batch, no gather),
and each epoch visits the training rows in a fresh seeded permutation (a full shuffle, where
the Ray path mixes with a shuffle buffer).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from clef_core.common.manifest import read_manifest
from clef_core.method.augment import batch_generator, model_views
from clef_core.method.config import ExperimentConfig
from clef_core.method.labels import LabelSpace
from clef_core.method.model import ClefModel, build_model, tokenizer_for
from clef_core.method.steps import (
    Predictions,
    finetune_step,
    make_optimizer,
    metrics_of,
    predict,
    pretrain_step,
    run_steps,
    warmup_cosine,
)
from clef_core.method.weights import au_pos_weights, expression_weights
from clef_core.training.cache import cached_split, decoded_arrays, source_size
from clef_core.training.selection import select_stage1

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
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    space: LabelSpace | None = None,
) -> LocalResult:
    """Train one stage on `dataset`'s `train_parts` (stage 2: then score `test_parts`).

    The rows are the dataset's decoded shards, or `arrays` when given (columns as
    `cache.decoded_arrays` has them; stage 2 then needs `space`, the labels of its `au`)."""
    shard_dir = cfg.data.shard_dir
    stage_cfg = cfg.stage1 if stage == 1 else cfg.stage2
    size = cfg.model.image_size
    if arrays is None:
        side = source_size(size, cfg.stage1.augment, cfg.stage2.augment)
        arrays = decoded_arrays(shard_dir, dataset, side)
    manifest = read_manifest(shard_dir, dataset) if stage == 1 or space is None else None
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.stage2.logit_scale_init, cfg.stage2.logit_scale_max)
    activities: list[tuple[str, str]] = []
    weights = None
    if stage == 1:
        assert manifest is not None
        tasks = manifest.tasks
        activities = [(dataset, t) for t in tasks]
        # BP4D: its coded frames; BP4D+: a capped sample per activity (clef_core.training.selection).
        sel = select_stage1(dataset, arrays, train_parts, cfg.stage1.frames_per_activity)
        train = cached_split(
            arrays, train_parts, sel.labels, {f"{dataset}/{t}": i for i, t in enumerate(tasks)},
            sel.limit,
        )  # fmt: skip
    else:
        if space is None:
            assert manifest is not None
            au_ids, classes = manifest.au_ids, manifest.classes
            space = LabelSpace.aus(au_ids) if au_ids else LabelSpace.expressions(classes)
        labels = "au" if space.kind == "au" else "expression"
        train = cached_split(arrays, train_parts, labels)
        if space.kind == "au":
            weights = torch.tensor(au_pos_weights(train["au"]), dtype=torch.float32)
        else:
            weights = torch.tensor(expression_weights(train["expression"], space.n))
        if cfg.stage2.head == "linear":
            model.set_linear_head(space.n)
    if init is not None:  # like load_weights(strict=False): every matching weight
        own = model.state_dict()
        model.load_state_dict(
            {k: v for k, v in init.state_dict().items() if k in own and v.shape == own[k].shape},
            strict=False,
        )
    lr = cfg.stage1.lr if stage == 1 else cfg.stage2.lr_for(dataset)
    opt = make_optimizer(model, lr, stage_cfg.weight_decay)
    batch = stage_cfg.batch_size
    steps = stage_cfg.steps_per_epoch or max(1, len(train["image"]) // batch)
    total, warm = steps * stage_cfg.epochs, int(stage_cfg.warmup_epochs * steps)
    tok = tokenizer_for(cfg.model)
    rng = random.Random(cfg.seed)
    at = [0, 0]  # the epoch and the index of the next batch in it (augment.batch_generator)
    losses: list[float] = []

    def step_fn(b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        gen = batch_generator(cfg.seed, at[0], 0, at[1])  # as the Ray loop's worker 0
        at[1] += 1
        if stage == 1:
            views = model_views(b, size, 2, cfg.stage1.augment, gen)
            return pretrain_step(model, views, tok, activities, cfg.stage1, rng)
        assert space is not None
        views = model_views(b, size, 1, cfg.stage2.augment, gen)
        return finetune_step(model, views, tok, space, cfg.stage2, weights, rng)

    def record(step: int, parts: dict[str, float]) -> None:
        losses.append(parts["loss"])
        if on_step is not None:
            on_step(step, parts)

    step = 0
    model.train()
    for epoch in range(stage_cfg.epochs):
        at[:] = [epoch, 0]  # the batch index counts across the epoch's passes

        def passes(k: int, done: int, epoch: int = epoch) -> Iterator[dict[str, torch.Tensor]]:
            # A fresh permutation for every pass.
            return column_batches(train, batch, cfg.seed + 1000 * epoch + done)

        step, _ = run_steps(
            step_fn, passes, steps, opt,
            lambda s: warmup_cosine(s, total, warm, lr, stage_cfg.min_lr),
            step, CPU, cfg.compute.precision, on_step=record,
        )  # fmt: skip
    result = LocalResult(model, losses)
    if stage == 2 and test_parts is not None:
        assert space is not None
        test = cached_split(arrays, test_parts, "au" if space.kind == "au" else "expression")
        result.predictions = predict(
            model, column_batches(test, 256, shuffle=False), tok, space, CPU
        )
        result.metrics = metrics_of(result.predictions, space, cfg.stage2.threshold)
    return result


def heldout_scores(pred: Predictions, threshold: float = 0.5) -> dict[str, float]:
    """What shows whether an AU model learned (`train.metrics_of`): mean F1 at `threshold`,
    the F1 of predicting every AU present over the same AUs, and the mean per-AU ROC-AUC."""
    space = LabelSpace("au", tuple(range(pred.targets.shape[1])))  # positions as ids
    m = metrics_of(pred, space, threshold)
    return {"f1": m["f1_mean"], "always_f1": m["f1_baseline_mean"], "auc": m["auc_mean"]}
