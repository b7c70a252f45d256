"""Augmentation randomness: each training batch draws from a generator seeded by (config seed,
epoch, worker rank, batch index), so the same batch is augmented anew every epoch (and on
every worker) while the same position in the same run is augmented alike, a resumed run
included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clef_core.method.augment import augment, batch_generator
from clef_core.method.config import AugmentConfig, load_config
from clef_core.method.labels import LabelSpace
from clef_core.training import local, loop

IMAGES = torch.randint(
    0, 256, (8, 72, 72, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
)


def _views(seed: int, epoch: int, rank: int, index: int) -> torch.Tensor:
    return augment(IMAGES, 64, AugmentConfig(), batch_generator(seed, epoch, rank, index))


def test_same_position_same_augmentation_any_other_differs() -> None:
    first = _views(0, 0, 0, 3)
    assert torch.equal(first, _views(0, 0, 0, 3))
    for other in ((0, 1, 0, 3), (0, 0, 1, 3), (0, 0, 0, 4), (1, 0, 0, 3)):
        assert not torch.allclose(first, _views(*other)), other
    # The second epoch's views of this batch are not its first epoch's, nor a shift of them.
    assert not any(torch.allclose(_views(0, 1, 0, k), first) for k in range(8))


def test_the_training_loop_seeds_each_batch_by_its_epoch_and_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runner loop (`clef_core.training.loop`, which the in-process runner and the Ray
    worker both drive) asks for (seed, epoch, rank, index) per batch; the same batch position
    of two epochs therefore gets different augmentations."""
    positions: list[tuple[int, int, int, int]] = []

    def recorded(seed: int, epoch: int, rank: int, index: int) -> torch.Generator:
        positions.append((seed, epoch, rank, index))
        return batch_generator(seed, epoch, rank, index)

    monkeypatch.setattr(loop, "batch_generator", recorded)
    n = 16
    rng = np.random.default_rng(0)
    arrays = {
        "image": rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
        "au": rng.integers(0, 2, (n, 2), dtype=np.int8),
        "expression": np.full(n, -1, np.int64),
        "part": np.zeros(n, np.int8),
        "dataset": np.full(n, "bp4d"),
        "task": np.full(n, "T1"),
        "row": np.arange(n, dtype=np.int64),
    }
    cfg = load_config(
        "cpu-tiny",
        [
            "seed=5",
            "model.inline.image_size=64",
            "stage2.epochs=2",
            "stage2.steps_per_epoch=2",
            "stage2.batch_size=8",
        ],
    )
    local.run_local_stage(cfg, 2, "bp4d", (0,), arrays=arrays, space=LabelSpace.aus([1, 2]))
    assert positions == [(5, 0, 0, 0), (5, 0, 0, 1), (5, 1, 0, 0), (5, 1, 0, 1)]
