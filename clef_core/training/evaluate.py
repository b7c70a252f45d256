"""Where a stage-2 checkpoint's held-out predictions come from: the ones the training loop
saved beside it (`predictions.npz`), or the checkpoint's model run afresh over a split. The
one way those predictions become a scored split (predictions.parquet, metrics, plots, the
run they are logged to) is `clef_core.run.evaluate.evaluate`; this module only predicts.

Predicting afresh reads the rows the training read: with `compute.cache_decoded` from the
decoded cache (`clef_core.training.cache`), in this process; otherwise Ray Data decodes the
shards in parallel. Each way gives `{"scores", "targets", "features"[, "rows"]}` arrays, as
the saved predictions have them (which add `feature_rows`, the features being a sample)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from clef_core.common.errors import ClefError
from clef_core.method.checkpoint import label_space_of, load_model, read_meta
from clef_core.method.config import ExperimentConfig
from clef_core.method.labels import LabelSpace, shard_label_space
from clef_core.method.model import tokenizer_for
from clef_core.method.steps import Predictions, predict
from clef_core.training.cache import source_size

EVALUATION = "evaluation"  # a unit folder's evaluation step output: metrics.json, predictions


def checkpoint_space(checkpoint: Path) -> LabelSpace:
    """The labels a stage-2 checkpoint predicts; a stage-1 checkpoint has none to score."""
    space = label_space_of(read_meta(checkpoint))
    if space is None:
        raise ClefError(f"{checkpoint} is a stage-1 checkpoint: it has no label heads to evaluate")
    return space


def saved_predictions(checkpoint: Path) -> dict[str, np.ndarray]:
    """The held-out predictions the training loop saved with the checkpoint."""
    with np.load(checkpoint / "predictions.npz") as data:
        return {k: data[k] for k in data.files}


def fresh_predictions(
    cfg: ExperimentConfig,
    checkpoint: Path,
    dataset: str,
    parts: tuple[int, ...] | None,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """The checkpoint's predictions on `dataset`'s labelled rows in `parts`, made now."""
    model, meta = load_model(checkpoint, map_location=device)
    space = label_space_of(meta)
    if space is None:
        raise ClefError(f"{checkpoint} is a stage-1 checkpoint: it has no label heads to evaluate")
    shards = shard_label_space(cfg.data.shard_dir, dataset)
    if shards != space:
        raise ClefError(
            f"{checkpoint} predicts {space.kind} labels {list(space.labels)}, "
            f"but the {dataset} shards have {list(shards.labels)}"
        )
    side = source_size(model.image_size, cfg.stage1.augment, cfg.stage2.augment)
    model.to(torch.device(device))
    pred = predict(
        model, _batches(cfg, dataset, parts, space, side), tokenizer_for(model.config), space,
        torch.device(device), cfg.compute.precision,
    )  # fmt: skip
    return as_arrays(pred)


def _batches(
    cfg: ExperimentConfig, dataset: str, parts: tuple[int, ...] | None, space: LabelSpace, side: int
) -> Iterable[dict[str, torch.Tensor]]:
    """The split's rows as tensor batches, in order, from the source the config trains from."""
    if cfg.compute.cache_decoded:
        from clef_core.training.cache import cached_split, decoded_arrays
        from clef_core.training.local import column_batches

        rows = cached_split(decoded_arrays(cfg.data.shard_dir, dataset, side), parts, space.column)
        return column_batches(rows, 256, shuffle=False)
    from clef_core.training.data import load_split, model_inputs

    rows = load_split(cfg.data.shard_dir, dataset, parts, space.column)
    return model_inputs(rows, side, None, cfg.compute.data_cpus).iter_torch_batches(batch_size=64)


def as_arrays(pred: Predictions) -> dict[str, np.ndarray]:
    arrays = {"scores": pred.scores, "targets": pred.targets, "features": pred.features}
    return arrays | ({} if pred.rows is None else {"rows": pred.rows})


def as_predictions(arrays: dict[str, np.ndarray]) -> Predictions:
    return Predictions(arrays["scores"], arrays["targets"], arrays["features"], arrays.get("rows"))


def device_or_error(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ClefError(f"--device {device} asked for, but no CUDA device is visible to torch")
    return device
