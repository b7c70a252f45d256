"""Both training steps on a GPU under bf16 autocast (the paper preset's precision; skipped
without CUDA, `bench/gpu_check.sh` runs it there): the loss and the gradient of one batch
agree with the CPU's float32 step within bf16's rounding."""

from __future__ import annotations

import random

import pytest
import torch

from clef_core.method.config import load_config
from clef_core.method.labels import LabelSpace
from clef_core.method.model import build_model, tokenizer_for
from clef_core.method.steps import autocast_for, finetune_step, pretrain_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
ACTIVITIES = [("bp4d", f"T{k}") for k in range(1, 9)]
AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)


def _loss_and_grad(stage: int, device: str, precision: str) -> tuple[float, torch.Tensor]:
    # A LayerNorm ViT as the paper's (cpu-tiny's ResNet has BatchNorm), 64 px.
    vit = ["model.inline.vision_layers=4", "model.inline.vision_width=128"]
    cfg = load_config("cpu-tiny", [*vit, "model.inline.image_size=64"])
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    g = torch.Generator().manual_seed(1)
    views = {k: torch.randn(16, 3, 64, 64, generator=g) for k in ("view1", "view2", "image")}
    batch = {
        **views,
        "activity": torch.arange(16) % 8,
        "au": torch.randint(0, 2, (16, len(AUS)), generator=g).to(torch.int8),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    tok, rng = tokenizer_for(cfg.model), random.Random(0)
    with autocast_for(torch.device(device), precision):
        if stage == 1:
            loss, _ = pretrain_step(model, batch, tok, ACTIVITIES, cfg.stage1, rng)
        else:
            weights = torch.ones(len(AUS), device=device)
            space = LabelSpace.aus(AUS)
            loss, _ = finetune_step(model, batch, tok, space, cfg.stage2, weights, rng)
    loss.backward()
    grad = torch.cat(
        [p.grad.flatten().float().cpu() for p in model.parameters() if p.grad is not None]
    )
    return float(loss.detach()), grad


@pytest.mark.parametrize("stage", [1, 2])
def test_bf16_step_matches_float32(stage: int) -> None:
    loss, grad = _loss_and_grad(stage, "cpu", "fp32")
    loss16, grad16 = _loss_and_grad(stage, "cuda", "bf16")
    assert abs(loss16 - loss) / abs(loss) < 2e-2, (loss16, loss)
    cosine = torch.nn.functional.cosine_similarity(grad, grad16, dim=0)
    assert cosine > 0.98, float(cosine)
    assert (grad16.norm() / grad.norm() - 1).abs() < 0.05
