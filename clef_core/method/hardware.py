"""How the model runs on the hardware: the `compute` switches of the GPU path (all ours: the
paper does not say how it trained). bf16 autocast is `steps.autocast_for`; the rest is here.
On CPUs every switch is harmless: TF32 and pinned copies are CUDA-only, and `torch_compile`
and `grad_checkpointing` are off unless asked for.
"""

from __future__ import annotations

import torch
from torch import nn

from clef_core.method.config import ComputeConfig
from clef_core.method.dist import distribute
from clef_core.method.model import ClefModel


def configure_device(compute: ComputeConfig, device: torch.device) -> None:
    """Process-wide: TF32 for the matmuls and convolutions left in fp32 on CUDA (autocast
    runs the rest in bf16). Called by the training worker's set-up."""
    if device.type == "cuda" and compute.tf32:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"


CPU_BF16_FLAGS = ("avx512_bf16", "amx_tile")  # /proc/cpuinfo's names of what oneDNN uses


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively here: on a CUDA GPU that has them (Ampere
    and later; a V100 or T4 emulates), and on a CPU with AVX512-BF16 or AMX (oneDNN's bf16
    kernels). Elsewhere bf16 is emulated, which we expect to be slower than fp32 (not measured
    here: this project's CPUs have AMX), so inference keeps fp32 unless asked
    (`clef_core.inference.predictor`). torch's CPU checks are private names: if they go, this
    says False and `tests/method/test_hardware.py` fails on a CPU whose flags say otherwise."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return device.type == "cpu" and any(getattr(torch.cpu, f, lambda: False)() for f in checks)


def prepare_model(model: ClefModel, compute: ComputeConfig, device: torch.device) -> nn.Module:
    """What the training step calls: `model` with gradient checkpointing when asked (open_clip
    recomputes each transformer block's activations in the backward pass: less memory, more
    time; its ResNet tower has none), compiled when asked (in place, so the weights keep their
    names), and under DDP when several workers train (`dist.distribute`). Load weights into
    `model` before; save and score `dist.unwrap` of the result."""
    if compute.grad_checkpointing:
        model.clip.set_grad_checkpointing(True)
    if compute.torch_compile:
        model.compile()
    return distribute(model, device)
