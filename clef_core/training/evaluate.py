"""Evaluate a saved checkpoint on a dataset's parts, on the driver (`clef evaluate`): Ray Data
decodes the shards in parallel, the model scores them on the given device."""

from __future__ import annotations

from pathlib import Path

import torch

from clef_core.common.errors import ClefError
from clef_core.method.checkpoint import label_space_of, load_model, read_meta
from clef_core.method.config import ExperimentConfig
from clef_core.method.model import tokenizer_for
from clef_core.method.steps import Predictions, metrics_of, predict
from clef_core.training.cache import source_size
from clef_core.training.data import load_split, model_inputs


def evaluate_checkpoint(
    cfg: ExperimentConfig,
    checkpoint: Path,
    dataset: str,
    parts: tuple[int, ...] | None,
    device: str = "cpu",
) -> tuple[Predictions, dict[str, float]]:
    """Predictions and metrics of a stage-2 checkpoint on `dataset`'s labelled rows in `parts`."""
    model, meta = load_model(checkpoint, map_location=device)
    space = label_space_of(meta)
    if space is None:
        raise ClefError(f"{checkpoint} is a stage-1 checkpoint: it has no label heads to evaluate")
    from clef_core.training.stages import label_space_of as shard_space

    shards = shard_space(cfg.data.shard_dir, dataset)
    if shards != space:
        raise ClefError(
            f"{checkpoint} predicts {space.kind} labels {list(space.labels)}, "
            f"but the {dataset} shards have {list(shards.labels)}"
        )
    rows = load_split(
        cfg.data.shard_dir, dataset, parts, "au" if space.kind == "au" else "expression"
    )
    side = source_size(model.image_size, cfg.stage1.augment, cfg.stage2.augment)
    batches = model_inputs(rows, side, None, cfg.compute.data_cpus)
    model.to(torch.device(device))
    pred = predict(
        model,
        batches.iter_torch_batches(batch_size=64),
        tokenizer_for(model.config),
        space,
        torch.device(device),
        cfg.compute.precision,
    )
    return pred, metrics_of(pred, space, cfg.stage2.threshold)


def device_or_error(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ClefError(f"--device {device} asked for, but no CUDA device is visible to torch")
    return device


EVALUATION = "evaluation"  # a unit folder's evaluation step output: metrics.json, predictions


def evaluate_unit(
    cfg: ExperimentConfig,
    checkpoint: Path,
    dataset: str,
    train_parts: tuple[int, ...] | None,
    test_parts: tuple[int, ...] | None,
    out: Path,
    device: str = "cpu",
) -> dict[str, float]:
    """The flow's evaluation step: a finished stage-2 checkpoint scored afresh on its test
    part, written to `out` (predictions.parquet, metrics.json); returns the metrics.

    With `compute.cache_decoded` the rows come from the decoded cache (the rows the shards
    give, `clef_core.training.cache`), in this process; otherwise Ray Data decodes the shards."""
    import json

    from clef_core.training.cache import cached_split, decoded_arrays
    from clef_core.training.heldout import FILE, write_held_out
    from clef_core.training.local import column_batches

    if cfg.compute.cache_decoded:
        model, meta = load_model(checkpoint, map_location=device)
        space = label_space_of(meta)
        if space is None:
            raise ClefError(f"{checkpoint} is a stage-1 checkpoint: no label heads to evaluate")
        side = source_size(model.image_size, cfg.stage1.augment, cfg.stage2.augment)
        rows = cached_split(
            decoded_arrays(cfg.data.shard_dir, dataset, side), test_parts,
            "au" if space.kind == "au" else "expression",
        )  # fmt: skip
        batches = column_batches(rows, 256, shuffle=False)
        model.to(torch.device(device))
        pred = predict(
            model, batches, tokenizer_for(model.config), space, torch.device(device),
            cfg.compute.precision,
        )  # fmt: skip
    else:
        pred, _ = evaluate_checkpoint(cfg, checkpoint, dataset, test_parts, device)
        space = label_space_of(read_meta(checkpoint))
        assert space is not None  # evaluate_checkpoint refuses stage-1 checkpoints
    metrics = write_held_out(
        pred, space, out / FILE, cfg.data.shard_dir, dataset, train_parts, test_parts,
        cfg.stage2.threshold,
    )  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics
