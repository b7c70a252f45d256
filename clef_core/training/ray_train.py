"""Both CLEF stages on Ray Train: Ray Data streams the shards into TorchTrainer workers that run
the plain training steps of `clef_core.method.steps`. The Ray-specific lines live here and only here.

Multi-worker semantics: stage-1 features are gathered with gradients (`clef_core.method.dist`), so
the contrastive loss is that of the global batch; gradients are averaged across workers after
each backward. Checkpoints are reported every epoch; a restarted worker resumes from the last
one (epoch and step included).
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig

from clef_core.common.manifest import read_manifest
from clef_core.common.runtime import configure_process
from clef_core.common.storage import Where, local_copy, location
from clef_core.method.augment import batch_generator, model_views
from clef_core.method.checkpoint import load_weights, read_meta, save_checkpoint, save_predictions
from clef_core.method.config import ExperimentConfig
from clef_core.method.dist import average_gradients, gather_with_grad
from clef_core.method.labels import LabelSpace
from clef_core.method.model import build_model, tokenizer_for
from clef_core.method.steps import (
    finetune_step,
    make_optimizer,
    metrics_of,
    predict,
    pretrain_step,
    run_steps,
    warmup_cosine,
)
from clef_core.method.weights import au_pos_weights, expression_weights
from clef_core.tracking.runbook import spool_dir, tracker_for
from clef_core.training.cache import (
    cached_split,
    decoded_arrays,
    read_table,
    shard_files,
    source_size,
)
from clef_core.training.data import (
    in_memory,
    keep_rows,
    load_split,
    model_inputs,
)
from clef_core.training.selection import stage1_rows


@dataclass(frozen=True)
class StageJob:
    stage: int  # 1 = activity pre-training, 2 = fine-tuning
    datasets: tuple[str, ...]  # stage 1: its sources; stage 2: the one dataset
    train_parts: tuple[int, ...] | None  # fold parts to train on (None = all)
    test_parts: tuple[int, ...] | None = None  # stage 2: parts to evaluate on
    init_from: str | None = None  # checkpoint directory to start from
    name: str = "clef"


@dataclass(frozen=True)
class StageResult:
    checkpoint: Path
    metrics: dict[str, float]


def activities_of(shard_dir: Where, datasets: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every (dataset, task) with rows, in a fixed order: the stage-1 activity labels."""
    out = []
    for d in datasets:
        out += [(d, t) for t in read_manifest(shard_dir, d).tasks]
    return out


def label_space_of(shard_dir: Where, dataset: str) -> LabelSpace:
    m = read_manifest(shard_dir, dataset)
    return LabelSpace.aus(m.au_ids) if m.au_ids else LabelSpace.expressions(m.classes)


def _rows_in(shard_dir: Where, dataset: str, parts: tuple[int, ...] | None) -> int:
    per_part = read_manifest(shard_dir, dataset).rows_per_part
    return sum(n for p, n in per_part.items() if parts is None or p in parts)


def _class_weights(shard_dir: Where, job: StageJob, space: LabelSpace) -> list[float]:
    """From the training split's label frequencies (clef_core.method.weights); the label columns are
    read straight from the shards (no images, no Ray job: milliseconds)."""
    column = "au" if space.kind == "au" else "expression"
    tables = [read_table(f, ["part", column]) for f in shard_files(shard_dir, job.datasets[0])]
    rows = keep_rows(pa.concat_tables(tables), job.train_parts, column)
    values = np.array(rows[column].to_pylist())
    if space.kind == "au":
        return au_pos_weights(values).tolist()
    return expression_weights(values, space.n).tolist()


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every worker."""
    configure_process()  # the worker's set-up: the environment the CLI's process has
    cfg = ExperimentConfig.model_validate(config["experiment"])
    job = StageJob(**config["job"])
    stage_cfg = cfg.stage1 if job.stage == 1 else cfg.stage2
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cpu":  # as many intra-op threads as CPUs the worker reserved
        torch.set_num_threads(max(1, int(cfg.compute.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.stage2.logit_scale_init, cfg.stage2.logit_scale_max)
    space = (
        LabelSpace(config["space"][0], tuple(config["space"][1])) if config.get("space") else None
    )
    if job.stage == 2 and cfg.stage2.head == "linear" and space is not None:
        model.set_linear_head(space.n)
    if job.init_from:  # a local folder or a URI every node reads (clef_core.common.storage)
        with local_copy(job.init_from) as init_dir:
            load_weights(init_dir, model, strict=False)
    model.to(device)
    tok = tokenizer_for(cfg.model)
    lr = cfg.stage1.lr if job.stage == 1 else cfg.stage2.lr_for(job.datasets[0])
    opt = make_optimizer(model, lr, stage_cfg.weight_decay)
    epoch0, step = 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # a restarted run: continue where the last report left off
        with checkpoint.as_directory() as d:
            load_weights(Path(d), model, opt, map_location=device)
            meta = read_meta(Path(d))
        epoch0, step = meta["epoch"] + 1, meta["step"]
    steps = config["steps_per_epoch"]
    total = steps * stage_cfg.epochs
    warm = int(stage_cfg.warmup_epochs * steps)
    rng = random.Random(cfg.seed + rank)
    activities = [tuple(a) for a in config.get("activities", [])]
    weights = torch.tensor(config["weights"], device=device) if config.get("weights") else None
    # Spooled on disk first: an MLflow outage never stops training (clef_core.tracking.runbook).
    spool = spool_dir(cfg.data.data_dir)
    tracker = tracker_for(rank, config.get("tracking_uri"), config.get("run_id"), spool)

    # Augmentation runs here, on the worker's device (the pipeline delivers uint8 images),
    # with each batch's own randomness: (seed, epoch, rank, batch index), `batch_generator`.
    size = cfg.model.image_size
    at = [epoch0, 0]  # the epoch and the index of the next batch in it

    def step_fn(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        gen = batch_generator(cfg.seed, at[0], rank, at[1])
        at[1] += 1
        if job.stage == 1:
            views = model_views(batch, size, 2, cfg.stage1.augment, gen)
            return pretrain_step(model, views, tok, activities, cfg.stage1, rng, gather_with_grad)
        assert space is not None
        views = model_views(batch, size, 1, cfg.stage2.augment, gen)
        return finetune_step(model, views, tok, space, cfg.stage2, weights, rng)

    train_shard = ray.train.get_dataset_shard("train")
    for epoch in range(epoch0, stage_cfg.epochs):
        at[:] = [epoch, 0]  # the batch index counts across the epoch's passes

        def passes(k: int, done: int, epoch: int = epoch) -> Any:  # the k-th pass of the epoch
            return train_shard.iter_torch_batches(
                batch_size=config["local_batch"],
                drop_last=True,
                local_shuffle_buffer_size=cfg.compute.shuffle_buffer or None,
                local_shuffle_seed=cfg.seed + 1000 * epoch + 100_000 * k + rank,
            )

        step, parts = run_steps(
            step_fn, passes, steps, opt,
            lambda s: warmup_cosine(s, total, warm, lr, stage_cfg.min_lr),
            step, device, cfg.compute.precision, after_backward=lambda: average_gradients(model),
        )  # fmt: skip
        metrics: dict[str, float] = {f"train_{k}": v for k, v in parts.items()}
        metrics["epoch"] = epoch
        pred = None
        last = epoch == stage_cfg.epochs - 1
        if (
            job.stage == 2
            and rank == 0
            and space is not None
            and (last or cfg.stage2.eval_every_epoch)
        ):
            # The final epoch's held-out metrics are the fold's result (no model selection on
            # the test part); earlier epochs only for the curves, when asked (a pass each).
            test = ray.train.get_dataset_shard("test").iter_torch_batches(batch_size=64)
            pred = predict(model, test, tok, space, device, cfg.compute.precision)
            metrics.update(metrics_of(pred, space, cfg.stage2.threshold))
        tracker.log_metrics(metrics, epoch)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                save_checkpoint(Path(tmp), model, cfg, job.stage, step, epoch, space, opt)
                if pred is not None and last:
                    save_predictions(Path(tmp) / "predictions.npz", pred)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)
    tracker.close(timeout=5)  # what is still unsent, the driver sends (RunBook.finish)


def run_stage(
    cfg: ExperimentConfig,
    job: StageJob,
    storage: Where,
    tracking_uri: str | None = None,
    run_id: str | None = None,
) -> StageResult:
    """Build the Ray Datasets for `job`, fit a TorchTrainer, return the final checkpoint (on
    this machine: a download when `storage` is a URI)."""
    shard_dir = cfg.data.shard_dir
    stage_cfg = cfg.stage1 if job.stage == 1 else cfg.stage2
    size = cfg.model.image_size
    data_cpus = cfg.compute.data_cpus
    concurrency = cfg.compute.data_concurrency
    loop_config: dict[str, Any] = {
        "experiment": cfg.model_dump(mode="json"),
        "job": asdict(job),
        "tracking_uri": tracking_uri,
        "run_id": run_id,
    }
    side = source_size(size, cfg.stage1.augment, cfg.stage2.augment)
    cache = cfg.compute.cache_decoded
    selected: dict[str, float] = {}  # stage 1: the rows read, for the unit's result
    if job.stage == 1:
        activities = activities_of(shard_dir, job.datasets)
        index = {f"{d}/{t}": i for i, (d, t) in enumerate(activities)}
        sources, rows = [], 0
        for d in job.datasets:
            # BP4D: its coded frames; BP4D+: a capped sample per activity (clef_core.training.selection).
            sel = stage1_rows(shard_dir, d, job.train_parts, cfg.stage1.frames_per_activity)
            selected |= sel.record()
            rows += sel.rows
            if cache:
                arrays = decoded_arrays(shard_dir, d, side)
                columns = cached_split(
                    arrays, job.train_parts, sel.labels, index, sel.limit, cfg.seed
                )
                sources.append(in_memory(columns))
                continue
            split = load_split(
                shard_dir, d, job.train_parts, sel.labels, shuffle_seed=cfg.seed, limit=sel.limit
            )
            sources.append(model_inputs(split, side, index, data_cpus, concurrency))
        train = sources[0].union(*sources[1:]) if len(sources) > 1 else sources[0]
        datasets = {"train": train}
        loop_config["activities"] = activities
    else:
        dataset = job.datasets[0]
        space = label_space_of(shard_dir, dataset)
        labels = "au" if space.kind == "au" else "expression"
        if cache:
            arrays = decoded_arrays(shard_dir, dataset, side)
            train_columns = cached_split(arrays, job.train_parts, labels, shuffle_seed=cfg.seed)
            datasets = {
                "train": in_memory(train_columns),
                "test": in_memory(cached_split(arrays, job.test_parts, labels)),
            }
            rows = len(train_columns["image"])
        else:
            train = load_split(shard_dir, dataset, job.train_parts, labels, shuffle_seed=cfg.seed)
            test = load_split(shard_dir, dataset, job.test_parts, labels)
            datasets = {
                "train": model_inputs(train, side, None, data_cpus, concurrency),
                "test": model_inputs(test, side, None, data_cpus, concurrency),
            }
            rows = _rows_in(shard_dir, dataset, job.train_parts)
        loop_config["space"] = [space.kind, list(space.labels)]
        loop_config["weights"] = _class_weights(shard_dir, job, space)
    workers = cfg.compute.num_workers
    loop_config["local_batch"] = max(1, stage_cfg.batch_size // workers)
    loop_config["steps_per_epoch"] = stage_cfg.steps_per_epoch or max(
        1, rows // stage_cfg.batch_size
    )
    store = location(storage)
    resources = {"CPU": cfg.compute.cpus_per_worker}
    if cfg.compute.use_gpu:
        resources["GPU"] = cfg.compute.gpus_per_worker
    trainer = ray.train.torch.TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=cfg.compute.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=job.name,
            # A URI: its filesystem (endpoint, credentials) travels to every worker.
            storage_path=str(store.local or store.path),
            storage_filesystem=None if store.local else store.fs,
            # The latest two, by time: a restart resumes from the last one, and the result is
            # the last epoch's model (no selection on held-out metrics, which only the last
            # epoch reports anyway).
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=cfg.compute.max_failures),
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    assert result.checkpoint is not None
    tracker_for(0, tracking_uri, run_id).log_metrics(selected, 0)
    final = Path(result.checkpoint.path) if store.local else Path(result.checkpoint.to_directory())
    return StageResult(final, dict(result.metrics or {}) | selected)
