"""The two measurements of a stage: warm images/s inside Ray Train and in a plain loop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clef_core.method.augment import model_views
from clef_core.method.config import ExperimentConfig
from clef_core.method.steps import set_lr
from clef_core.training.cache import cached_split, decoded_arrays, source_size
from clef_core.training.local import column_batches
from clef_core.training.stages import Batch, Stage, StageJob, make_stage, plan_stage

CPU = torch.device("cpu")


def make_shards(root: Path) -> Path:
    """Synthetic BP4D shards (the generator's `test` preset, 112-px crops) under `root`."""
    from preprocessing.pipeline import PreprocessOptions, finish, plan, process_sequence
    from synthetic.generate import generate
    from synthetic.spec import make_spec

    generate(make_spec(root / "synth", "test", datasets=("bp4d",)), show_progress=False)
    opts = PreprocessOptions("bp4d", root / "synth" / "BP4D", root / "shards", image_size=112)
    sequences, issues = plan(opts)
    finish(opts, [process_sequence(opts, s) for s in sequences], issues)
    return root / "shards"


def job_of(stage: int) -> StageJob:
    """BP4D fold 1's job of `stage` (stage 2 scores part 0 after the timed steps)."""
    test = (0,) if stage == 2 else None
    return StageJob(stage, ("bp4d",), (1, 2), test, name=f"train-speed-{stage}")


@dataclass
class Setup:
    stage: Stage  # as every worker builds it from the plan
    batch: Batch  # one batch of the stage's training rows, uint8 images as workers get them
    images_per_step: int  # images the step encodes (stage 1: two views of each row)


def setup(cfg: ExperimentConfig, number: int) -> Setup:
    """The stage Ray Train would run for `job_of(number)`, and an in-memory batch of its rows."""
    stage = make_stage(cfg, plan_stage(cfg, job_of(number)))
    side = source_size(cfg.model.image_size, cfg.stage1.augment, cfg.stage2.augment)
    (split,) = stage.plan.train
    rows = cached_split(
        decoded_arrays(cfg.data.shard_dir, split.dataset, side),
        split.parts, split.labels, stage.activity_index, split.limit, None, split.subjects,
    )  # fmt: skip
    size = stage.hp.batch_size
    batch = next(column_batches(rows, size, cfg.seed))
    return Setup(stage, batch, size * stage.views)


def warm_rate(ends: list[float], warm: int, images_per_step: int) -> float:
    """Images/s over the steps after the first `warm` (`ends`: each step's end time)."""
    if len(ends) < warm + 2:
        raise ValueError(f"{len(ends)} steps timed; need at least warm + 2 = {warm + 2}")
    return (len(ends) - 1 - warm) * images_per_step / (ends[-1] - ends[warm])


def plain_rate(s: Setup, steps: int, warm: int, threads: int) -> float:
    """The floor: the stage's augmentation, step, backward and AdamW step on the in-memory
    batch, in this process (`threads` intra-op threads, as the worker sets them)."""
    stage, cfg = s.stage, s.stage.cfg
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    model = stage.build_model()
    opt = stage.optimizer(model)
    step_fn = stage.step_fn(model, CPU, cfg.seed)
    lr_at = stage.lr_schedule(steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    ends = []
    for i in range(steps):
        views = model_views(s.batch, cfg.model.image_size, stage.views, stage.augment, gen)
        set_lr(opt, lr_at(i))
        opt.zero_grad(set_to_none=True)
        loss, parts = step_fn(views)
        loss.backward()
        opt.step()
        float(parts["loss"])  # what the Ray loop's timing callback reads each step
        ends.append(time.perf_counter())
    return warm_rate(ends, warm, s.images_per_step)


def ray_rate(cfg: ExperimentConfig, s: Setup, storage: Path, warm: int) -> float:
    """The same stage through `run_stage` (its steps per epoch are the config's), timed from
    the step ends the worker reports."""
    from clef_core.training.ray_train import run_stage

    result = run_stage(cfg, job_of(s.stage.number), storage, time_steps=True)
    ends: Any = result.metrics["step_times"]  # a list, beside the float metrics
    return warm_rate(list(ends), warm, s.images_per_step)
