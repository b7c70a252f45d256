"""Checkpoints: `model.pt` (state dict), `optimizer.pt`, and `meta.json` beside them.

Loading uses `torch.load(weights_only=True)`: tensors only, never arbitrary pickled code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clef_core import __version__
from clef_core.common.errors import ClefError
from clef_core.method.config import ExperimentConfig
from clef_core.method.labels import LabelSpace
from clef_core.method.model import ClefModel, build_model, load_tensors


def save_checkpoint(
    directory: Path,
    model: ClefModel,
    config: ExperimentConfig,
    stage: int,
    step: int,
    epoch: int,
    space: LabelSpace | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "model.pt")
    if optimizer is not None:
        torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    meta = {
        "stage": stage,
        "step": step,
        "epoch": epoch,
        "code_version": __version__,
        "label_kind": space.kind if space else None,
        "labels": list(space.labels) if space else None,
        "head": "linear" if model.head is not None else "names",
        # what the model started from (name, source URL, SHA-256), also in the config
        "initial_weights": source.model_dump() if (source := config.model.init_source) else None,
        "config": config.model_dump(mode="json"),
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))
    return directory


def save_predictions(path: Path, pred: Any, max_features: int = 2000) -> Path:
    """Held-out scores, targets and row keys (all rows) and image features (a seeded sample, for the
    t-SNE plot) as one .npz beside the checkpoint."""
    import numpy as np

    keep = np.sort(np.random.default_rng(0).permutation(len(pred.features))[:max_features])
    rows = {} if getattr(pred, "rows", None) is None else {"rows": pred.rows}  # row identities
    np.savez_compressed(
        path, scores=pred.scores, targets=pred.targets, features=pred.features[keep],
        feature_rows=keep, **rows,
    )  # fmt: skip
    return path


def read_meta(directory: Path) -> dict[str, Any]:
    path = directory / "meta.json"
    if not path.is_file():
        raise ClefError(
            f"{directory} is not a CLEF checkpoint: expected meta.json and model.pt in it"
        )
    return json.loads(path.read_text())


def label_space_of(meta: dict[str, Any]) -> LabelSpace | None:
    if not meta.get("labels"):
        return None
    return LabelSpace(meta["label_kind"], tuple(meta["labels"]))


def load_model(
    directory: Path, map_location: str | torch.device = "cpu"
) -> tuple[ClefModel, dict[str, Any]]:
    """Rebuild the model a checkpoint was saved from and load its weights."""
    meta = read_meta(directory)
    cfg = ExperimentConfig.model_validate(meta["config"])
    model = build_model(
        cfg.model.model_copy(update={"init_weights": None}),
        cfg.stage2.logit_scale_init,
        cfg.stage2.logit_scale_max,
    )
    space = label_space_of(meta)
    if meta.get("head") == "linear" and space is not None:
        model.set_linear_head(space.n)
    load_weights(directory, model, map_location=map_location)
    return model, meta


def load_weights(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
) -> None:
    state = load_tensors(directory / "model.pt", map_location)
    if not strict:  # stage 1 -> stage 2: the backbone only, a head is new
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    model.load_state_dict(state, strict=strict)
    if optimizer is not None and (directory / "optimizer.pt").exists():
        optimizer.load_state_dict(load_tensors(directory / "optimizer.pt", map_location))


def checkpoint_problem(directory: Path) -> str | None:
    """Why the checkpoint in `directory` cannot be loaded whole (one line naming the file), or
    None when every file opens: meta.json parses and each torch / numpy archive passes its
    zip check (every member's CRC, so a file cut short or damaged anywhere is caught without
    unpickling anything)."""
    import zipfile

    meta = directory / "meta.json"
    try:
        json.loads(meta.read_text())
    except (OSError, ValueError) as err:
        return f"{meta}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    for name in ("model.pt", "optimizer.pt", "predictions.npz"):
        path = directory / name
        if name != "model.pt" and not path.exists():
            continue  # optional files
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
            if damaged is not None:
                return f"{path}: member {damaged} fails its CRC check"
        except (OSError, zipfile.BadZipFile, EOFError) as err:
            return f"{path}: {type(err).__name__}: {err}"
    return None
