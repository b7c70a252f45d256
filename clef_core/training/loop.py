"""The one runner loop: epochs of a `stages.Stage` on a model, whatever feeds it.

A Ray Train worker (`ray_train.train_loop`) and the in-process runner (`local`) both call
`run_loop`; they differ only in their `Feed` (Ray Data shards or in-memory columns), in the
gather across workers, and in what they do at each epoch's end (`on_epoch`: the Ray worker
reports metrics and a checkpoint). Per step: the batch's augmented views on the worker's
device (`augment.model_views`, seeded by (seed, epoch, rank, batch index)), then the stage's
step function under `method.steps.run_steps` (schedule, autocast, backward, AdamW).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from clef_core.method.augment import batch_generator, model_views
from clef_core.method.hardware import prepare_model
from clef_core.method.model import ClefModel
from clef_core.method.steps import (
    Gather,
    OnStep,
    Parts,
    Predictions,
    no_gather,
    run_steps,
)
from clef_core.training.stages import Batch, Stage


@dataclass
class Feed:
    """Where the loop's batches come from (uint8 images and labels, as the inputs deliver them)."""

    # (epoch, k, steps done in the epoch) -> the epoch's k-th pass over this worker's rows
    train: Callable[[int, int, int], Iterable[Batch]]
    steps_per_epoch: (
        int  # optimiser steps per epoch (a pass that ends early is followed by another)
    )
    test: Callable[[], Iterable[Batch]] | None = None  # held-out rows (None: no scoring here)


@dataclass
class EpochEnd:
    epoch: int
    step: int  # global optimiser steps taken so far
    metrics: dict[str, float]  # train_<part> (the epoch's means), epoch, held-out scores
    predictions: Predictions | None  # held-out predictions, when the stage scored this epoch
    scores: dict[str, float]  # their metrics (also in `metrics`); empty when not scored
    last: bool


def run_loop(
    stage: Stage,
    model: ClefModel,
    optimizer: torch.optim.Optimizer,
    feed: Feed,
    device: torch.device,
    *,
    rank: int = 0,
    start: tuple[int, int] = (0, 0),
    gather: Gather = no_gather,
    on_step: OnStep | None = None,
    on_epoch: Callable[[EpochEnd], None] | None = None,
) -> int:
    """Train `model` from epoch `start[0]` and global step `start[1]` (a resumed run) to the
    stage's last epoch; returns the global step. The step calls `model` as
    `method.hardware.prepare_model` sets it up (DDP across workers, compile, gradient
    checkpointing); scoring and `on_epoch` get `model` itself, never a wrapper.
    `optimizer` holds `model`'s parameters; load any weights before the call."""
    cfg = stage.cfg
    trained = prepare_model(model, cfg.compute, device)
    precision = cfg.compute.precision
    size = cfg.model.image_size
    step_fn = stage.step_fn(trained, device, cfg.seed + rank, gather)
    lr_at = stage.lr_schedule(feed.steps_per_epoch)
    epoch0, step = start
    at = [epoch0, 0]  # the epoch, and the index of its next batch (counted across its passes)

    def augmented(batch: Batch) -> tuple[torch.Tensor, Parts]:
        """The stage's step on the batch's augmented views, seeded per batch (`batch_generator`)."""
        gen = batch_generator(cfg.seed, at[0], rank, at[1])
        at[1] += 1
        return step_fn(model_views(batch, size, stage.views, stage.augment, gen))

    trained.train()
    for epoch in range(epoch0, stage.hp.epochs):
        at[:] = [epoch, 0]

        def passes(k: int, done: int, epoch: int = epoch) -> Iterable[Batch]:
            return feed.train(epoch, k, done)

        step, means = run_steps(
            augmented, passes, feed.steps_per_epoch, optimizer, lr_at, step, device, precision,
            on_step=on_step,
        )  # fmt: skip
        metrics = {f"train_{k}": v for k, v in across_workers(means, gather, device).items()}
        metrics["epoch"] = epoch
        pred: Predictions | None = None
        scores: dict[str, float] = {}
        if feed.test is not None and stage.evaluates(epoch):
            pred, scores = stage.heldout(model, feed.test(), device, precision)
            metrics |= scores
        if on_epoch is not None:
            on_epoch(EpochEnd(epoch, step, metrics, pred, scores, epoch == stage.hp.epochs - 1))
    return step


def across_workers(
    means: dict[str, float], gather: Gather, device: torch.device
) -> dict[str, float]:
    """Each worker's epoch means averaged over the workers (one gather per epoch): the stage-2
    loss is each worker's own batch's, so rank 0's alone would describe a 1/W sample. The
    stage-1 loss is already the global batch's on every worker and stays as it is."""
    if not means:
        return means
    local = torch.tensor([list(means.values())], dtype=torch.float64, device=device)
    return dict(zip(means, gather(local).mean(0).tolist(), strict=True))
