"""Both CLEF stages on Ray Train: Ray Data streams the shards into TorchTrainer workers that
run `loop.run_loop` on the stage `stages` describes. The Ray-specific lines live here and only
here: the datasets, the trainer, and on each worker its rank and device, its dataset shard,
the resumed checkpoint and the per-epoch report.

Multi-worker semantics: stage-1 features are gathered with gradients (`clef_core.method.dist`),
so the contrastive loss is that of the global batch; DDP averages the gradients in the backward
pass (`loop.run_loop` wraps the model); an epoch's logged train_* means are averaged over the
workers (`loop.across_workers`). Checkpoints are reported every epoch; a restarted
worker resumes from the last one (epoch and step included).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig

from clef_core.common.runtime import configure_process
from clef_core.common.storage import Where, local_copy, location
from clef_core.method.checkpoint import load_weights, read_meta
from clef_core.method.config import ExperimentConfig
from clef_core.method.dist import gather_with_grad
from clef_core.method.hardware import configure_device
from clef_core.method.model import ClefModel
from clef_core.training.cache import cached_split, decoded_arrays, source_size
from clef_core.training.data import in_memory, load_split, model_inputs
from clef_core.training.loop import EpochEnd, Feed, run_loop
from clef_core.training.stages import Split, Stage, StageJob, make_stage, plan_stage
from clef_core.training.tracker import TrackerFactory, open_tracker

__all__ = ["StageJob", "StageResult", "run_stage"]


@dataclass(frozen=True)
class StageResult:
    checkpoint: Path
    metrics: dict[str, float]


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every worker: the stage's model, resumed when Ray restarted the worker, trained
    by `run_loop` on this worker's shard; rank 0 reports a checkpoint every epoch."""
    configure_process()  # the worker's set-up: the environment the CLI's process has
    cfg = ExperimentConfig.model_validate(config["experiment"])
    job, plan = StageJob(**config["job"]), config["plan"]
    stage = make_stage(cfg, plan)
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cpu":  # as many intra-op threads as CPUs the worker reserved
        torch.set_num_threads(max(1, int(cfg.compute.cpus_per_worker)))
    configure_device(cfg.compute, device)  # TF32 on CUDA
    model, opt, start = _model_to_train(stage, job.init_from, device)
    # Rank 0 logs the unit's run; the tracker the caller handed in spools each call on disk
    # first, so an MLflow outage never stops training (`clef_core.training.tracker`).
    tracker = open_tracker(config.get("tracker"), rank)

    train_shard = ray.train.get_dataset_shard("train")
    pin = cfg.compute.pin_memory and device.type == "cuda"  # Ray copies with non_blocking

    def train(epoch: int, k: int, done: int) -> Any:  # the k-th pass of the epoch
        return train_shard.iter_torch_batches(
            batch_size=config["local_batch"],
            drop_last=True,
            local_shuffle_buffer_size=cfg.compute.shuffle_buffer or None,
            local_shuffle_seed=cfg.seed + 1000 * epoch + 100_000 * k + rank,
            pin_memory=pin,
        )

    def test() -> Any:
        return ray.train.get_dataset_shard("test").iter_torch_batches(batch_size=64, pin_memory=pin)

    # `run_stage(time_steps=True)`: each optimiser step's end (perf_counter, this worker's
    # clock), reported with the epoch's metrics: a benchmark times warm steps inside Ray Train
    # without worker start (bench/train_speed). Off, nothing is recorded.
    times: list[float] | None = [] if config.get("time_steps") else None
    on_step = None if times is None else lambda step, parts: times.append(time.perf_counter())

    def report(end: EpochEnd) -> None:
        tracker.log_metrics(end.metrics, end.epoch)
        extra = {} if times is None else {"step_times": list(times)}
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                pred = end.predictions if end.last else None
                stage.save(Path(tmp), model, opt, end.step, end.epoch, pred)  # the plain model
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(end.metrics | extra, checkpoint=ckpt)

    # The held-out rows (a "test" dataset when the plan has them) are scored once, on rank 0.
    scores = plan.test is not None and rank == 0
    feed = Feed(train, config["steps_per_epoch"], test if scores else None)
    run_loop(
        stage, model, opt, feed, device, rank=rank, start=start, gather=gather_with_grad,
        on_step=on_step, on_epoch=report,
    )  # fmt: skip
    tracker.close(timeout=5)  # what is still unsent, the driver sends (RunBook.finish)


def _model_to_train(
    stage: Stage, init_from: str | None, device: torch.device
) -> tuple[ClefModel, torch.optim.Optimizer, tuple[int, int]]:
    """The stage's model on `device` and its optimiser, and the (epoch, global step) to start
    from: from `init_from`'s weights, or, when Ray restarted the worker, from the last reported
    checkpoint (weights, optimiser, epoch and step)."""
    torch.manual_seed(stage.cfg.seed)
    model = stage.build_model()
    if init_from:  # a local folder or a URI every node reads (clef_core.common.storage)
        with local_copy(init_from) as init_dir:
            load_weights(init_dir, model, strict=False)
    model.to(device)
    opt = stage.optimizer(model)
    start = (0, 0)  # epoch, global step
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # a restarted run: continue where the last report left off
        with checkpoint.as_directory() as d:
            load_weights(Path(d), model, opt, map_location=device)
            meta = read_meta(Path(d))
        start = (meta["epoch"] + 1, meta["step"])
    return model, opt, start


def _datasets(cfg: ExperimentConfig, stage: Stage) -> dict[str, ray.data.Dataset]:
    """The plan's splits as Ray Datasets ("train", and stage 2's "test"): decoded in Ray Data
    tasks from the shards, or from the decoded cache in memory (`compute.cache_decoded`)."""
    shard_dir, plan = cfg.data.shard_dir, stage.plan
    side = source_size(cfg.model.image_size, cfg.stage1.augment, cfg.stage2.augment)
    index = stage.activity_index

    def source(split: Split, shuffle: bool) -> ray.data.Dataset:
        seed = cfg.seed if shuffle else None
        if cfg.compute.cache_decoded:
            arrays = decoded_arrays(shard_dir, split.dataset, side)
            return in_memory(
                cached_split(
                    arrays, split.parts, split.labels, index, split.limit, seed, split.subjects
                )
            )
        rows = load_split(
            shard_dir, split.dataset, split.parts, split.labels, seed, split.limit, split.subjects
        )
        return model_inputs(
            rows, side, index, cfg.compute.data_cpus, cfg.compute.decode_concurrency
        )

    train = [source(s, shuffle=True) for s in plan.train]
    datasets = {"train": train[0].union(*train[1:]) if len(train) > 1 else train[0]}
    if plan.test is not None:
        datasets["test"] = source(plan.test, shuffle=False)
    return datasets


def run_stage(
    cfg: ExperimentConfig,
    job: StageJob,
    storage: Where,
    tracker: TrackerFactory | None = None,
    time_steps: bool = False,
) -> StageResult:
    """Plan `job`, build its Ray Datasets, fit a TorchTrainer, return the final checkpoint (on
    this machine: a download when `storage` is a URI). `tracker`: what rank 0 logs each
    epoch's metrics through (None: nothing is logged). `time_steps`: the metrics carry
    `step_times`, the end of every step so far on rank 0's clock (a benchmark's;
    each step's loss parts are then read as floats, a host sync per step)."""
    plan = plan_stage(cfg, job)
    stage = make_stage(cfg, plan)
    workers = cfg.compute.num_workers
    loop_config: dict[str, Any] = {
        "experiment": cfg.model_dump(mode="json"),
        "job": asdict(job),
        "plan": plan,
        "tracker": tracker,
        "local_batch": stage.batch_per_worker(workers),
        "steps_per_epoch": stage.steps_per_epoch(plan.rows),
        "time_steps": time_steps,
    }
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
        datasets=_datasets(cfg, stage),
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    assert result.checkpoint is not None
    final = Path(result.checkpoint.path) if store.local else Path(result.checkpoint.to_directory())
    return StageResult(final, dict(result.metrics or {}) | plan.record)
