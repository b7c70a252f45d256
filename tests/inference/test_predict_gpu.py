"""`clef predict` on a GPU (skipped without CUDA; `bench/gpu_check.sh` runs it there): one
checkpoint scores the same aligned crops on CUDA (pinned copy, resize on the GPU, bf16
autocast) as on the CPU within bf16's rounding, with the same columns and decisions but near
the threshold; a second batch through the reused pinned buffer scores alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clef_core.inference.predictor import Predictor
from clef_core.method.checkpoint import save_checkpoint
from clef_core.method.config import load_config
from clef_core.method.labels import LabelSpace
from clef_core.method.model import build_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)


def test_cuda_scores_match_the_cpu(tmp_path: Path) -> None:
    cfg = load_config("cpu-tiny")
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "m", build_model(cfg.model), cfg, 2, 0, 0, LabelSpace.aus(AUS)
    )
    crops = np.random.default_rng(0).integers(0, 256, (40, 224, 224, 3), dtype=np.uint8)
    cpu = Predictor.from_uri(str(ckpt), "cpu", 16, labels=["a smile"])
    gpu = Predictor.from_uri(str(ckpt), "cuda", 16, labels=["a smile"])
    assert gpu.heads[0].precision == "auto"  # bf16 autocast on CUDA
    ours, theirs = cpu.score_crops(crops), gpu.score_crops(crops)
    again = gpu.score_crops(list(crops))  # a list, through the same pinned buffer
    assert [r.keys() for r in ours] == [r.keys() for r in theirs] == [r.keys() for r in again]
    probs = [k for k in ours[0] if k.endswith("_p")]
    a = np.array([[r[k] for k in probs] for r in ours])
    b = np.array([[r[k] for k in probs] for r in theirs])
    assert np.abs(a - b).max() < 0.05 and np.abs(a - b).mean() < 0.01, np.abs(a - b).max()
    c = np.array([[r[k] for k in probs] for r in again])
    np.testing.assert_allclose(b, c, atol=1e-6)
    clear = np.abs(a - 0.5) > 0.05  # decisions away from the threshold agree
    decided = np.array([[r[f"AU{x:02d}_c"] for x in AUS] for r in theirs])
    expected = np.array([[r[f"AU{x:02d}_c"] for x in AUS] for r in ours])
    au_clear = clear[:, : len(AUS)]
    assert (decided[au_clear] == expected[au_clear]).all()
