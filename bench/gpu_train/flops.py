"""Model FLOPs from the towers' shapes, beside torch's FLOP counter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class TowerFlops:
    image: float  # forward FLOPs of the image tower per image
    text: float  # forward FLOPs of the text tower per text (its whole context)
    image_formula: str
    text_formula: str
    image_counted: float  # torch.utils.flop_counter's count of the same forward
    text_counted: float


def _blocks(n: int, width: int, mlp: int, layers: int) -> tuple[float, str]:
    """Pre-LN transformer blocks on n tokens: QKV + output projections 8nw^2, MLP 4nwm,
    attention scores and weighted values 4n^2w, per layer; FLOPs = 2 x multiply-adds."""
    flops = layers * (8 * n * width**2 + 4 * n * width * mlp + 4 * n**2 * width)
    formula = f"{layers} x (8*{n}*{width}^2 + 4*{n}*{width}*{mlp} + 4*{n}^2*{width})"
    return float(flops), formula


def _counted(fn: Callable[[], Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def tower_flops(model: Any, device: torch.device) -> TowerFlops:
    """Forward FLOPs per image and per text from the towers' shapes (matrix products and
    convolutions; norms, activations and softmax are left out, as MFU counts do).

    A ViT image tower and the text transformer by formula; any other image tower (cpu-tiny's
    ResNet) by torch's FLOP counter. The counter's figure is printed beside each formula: it
    sees the linear layers and convolutions, and the attention products (4n^2w per layer)
    only where attention runs through a kernel it knows (on the CPU, measured: not), so it
    can be a little under the formula."""
    clip = model.clip
    d = int(clip.text_projection.shape[1])
    size = model.image_size
    with torch.no_grad():
        image = torch.zeros(1, 3, size, size, device=device)
        text = torch.zeros(1, clip.context_length, dtype=torch.long, device=device)
        image_counted = _counted(lambda: clip.visual(image))
        text_counted = _counted(lambda: clip.encode_text(text))
    v = clip.visual
    if hasattr(v, "transformer") and hasattr(v, "conv1") and getattr(v, "attn_pool", None) is None:
        patch = v.conv1.kernel_size[0]
        w = v.transformer.width
        grid = v.grid_size[0] * v.grid_size[1]
        n = grid + 1  # patches + the class token
        mlp = v.transformer.resblocks[0].mlp.c_fc.out_features
        blocks, f = _blocks(n, w, mlp, v.transformer.layers)
        image_flops = 2 * grid * 3 * patch**2 * w + blocks + 2 * w * d
        image_formula = (
            f"patches 2*{grid}*3*{patch}^2*{w} + blocks {f} + projection 2*{w}*{d}"
            f" = {image_flops / 1e9:.2f} GFLOP"
        )
    else:
        image_flops = image_counted
        image_formula = f"{type(v).__name__}: counted by torch.utils.flop_counter"
    t = clip.transformer
    n_text = int(clip.context_length)
    mlp_t = t.resblocks[0].mlp.c_fc.out_features
    blocks_t, f_t = _blocks(n_text, t.width, mlp_t, t.layers)
    text_flops = blocks_t + 2 * t.width * d  # the projection of the pooled token only
    text_formula = f"blocks {f_t} + projection 2*{t.width}*{d} = {text_flops / 1e9:.2f} GFLOP"
    return TowerFlops(
        image_flops, text_flops, image_formula, text_formula, image_counted, text_counted
    )
