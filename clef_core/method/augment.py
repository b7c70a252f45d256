"""Batched image transforms on tensors: stage-1 augmentations and the evaluation resize.

Random resized crop, horizontal flip and rotation are one affine warp per image, applied to
the whole batch with a single `grid_sample`, so augmenting costs about as much as resizing.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from clef_core.common.runtime import prepare_torchvision
from clef_core.method.config import AugmentConfig

prepare_torchvision()  # before open_clip imports torchvision (CPU torch, CUDA torchvision)
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # noqa: E402

_MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] RGB -> float [B, 3, H, W] in [0, 1]."""
    x = torch.as_tensor(images)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """CLIP's mean/std normalisation of [B, 3, H, W] in [0, 1]."""
    return (x - _MEAN.to(x)) / _STD.to(x)


def _smooth_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [B, 3, H, W], antialiased when shrinking."""
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def batch_generator(seed: int, epoch: int, rank: int, index: int) -> torch.Generator:
    """The augmentation randomness of one training batch: a generator seeded from (config
    seed, epoch, worker rank, batch index in the epoch), mixed by numpy's SeedSequence. So a
    batch is augmented anew every epoch and on every worker, and the same batch of the same
    run is augmented alike wherever it is trained, a resumed run included (ours)."""
    words = [v % 2**64 for v in (seed, epoch, rank, index)]
    state = np.random.SeedSequence(words).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def _random_affines(b: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """[B, 2, 3] affine_grid matrices: output coords -> input coords (normalised [-1, 1])."""
    lo, hi = cfg.crop_scale
    area = lo + (hi - lo) * torch.rand(b, generator=gen)
    side = area.sqrt()  # crop side as a fraction of the image side (square crops)
    # Crop centre anywhere the crop stays inside the image.
    cx = (1 - side) * (2 * torch.rand(b, generator=gen) - 1)
    cy = (1 - side) * (2 * torch.rand(b, generator=gen) - 1)
    angle = math.radians(cfg.rotation_deg) * (2 * torch.rand(b, generator=gen) - 1)
    flip = torch.where(torch.rand(b, generator=gen) < cfg.flip_p, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = side * cos * flip
    theta[:, 0, 1] = -side * sin
    theta[:, 1, 0] = side * sin * flip
    theta[:, 1, 1] = side * cos
    theta[:, 0, 2], theta[:, 1, 2] = cx, cy
    return theta


def augment(
    images: np.ndarray | torch.Tensor, size: int, cfg: AugmentConfig, gen: torch.Generator
) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> normalised float [B, 3, size, size], randomly cropped/flipped/rotated."""
    x = to_float(images)  # (B, 3, H, W)
    # Bilinear sampling of a much larger image aliases (224-px shards into a 64-px model skip
    # most pixels), while evaluation's `resize` antialiases: so the image is first shrunk,
    # antialiased, to where even the smallest crop is sampled at about one pixel per pixel.
    source = math.ceil(size / math.sqrt(cfg.crop_scale[0]))
    if max(x.shape[-2:]) > source:
        h, w = x.shape[-2:]
        shrink = source / max(h, w)
        x = _smooth_resize(x, (round(h * shrink), round(w * shrink)))
    theta = _random_affines(x.shape[0], cfg, gen).to(x.device)
    grid = F.affine_grid(theta, [x.shape[0], 3, size, size], align_corners=False)
    return normalize(
        F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    )


def resize(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> normalised float [B, 3, size, size] (evaluation; no randomness)."""
    x = to_float(images)
    if x.shape[-1] != size:
        x = _smooth_resize(x, (size, size))
    return normalize(x)


def model_views(
    batch: dict[str, torch.Tensor], size: int, views: int, cfg: AugmentConfig, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """A batch as delivered to a worker (uint8 `image` [B, H, W, 3], on its device) -> model
    inputs: views=0 `image` resized (evaluation), 1 `image` augmented (stage 2), 2 `view1`
    and `view2`, two independent augmentations (stage 1). Other keys pass through."""
    out = {k: v for k, v in batch.items() if k != "image"}
    images = batch["image"]
    if views == 0:
        out["image"] = resize(images, size)
    elif views == 1:
        out["image"] = augment(images, size, cfg, gen)
    else:
        out["view1"] = augment(images, size, cfg, gen)
        out["view2"] = augment(images, size, cfg, gen)
    return out
