"""The GPU path's switches are harmless on CPU: with gradient checkpointing on
(`compute.grad_checkpointing`, open_clip's set_grad_checkpointing) a stage-2 step of the
cpu-tiny model gives the same loss and gradients as without. torch.compile
(`compute.torch_compile`) is not tested here: on this shared 2-core machine its first CPU
compile of the tiny model did not finish within 10 minutes (docs/method.md, "What is ours")."""

from __future__ import annotations

import random

import pytest
import torch

from clef_core.method.config import load_config
from clef_core.method.hardware import prepare_model
from clef_core.method.labels import LabelSpace
from clef_core.method.model import build_model, tokenizer_for
from clef_core.method.steps import finetune_step

CPU = torch.device("cpu")


def _step(grad_checkpointing: bool) -> tuple[float, dict[str, torch.Tensor], bool]:
    cfg = load_config("cpu-tiny", ["model.inline.image_size=64"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    compute = cfg.compute.model_copy(update={"grad_checkpointing": grad_checkpointing})
    trained = prepare_model(model, compute, CPU)  # one worker: the model itself
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(4, 3, 64, 64, generator=g),
        "au": torch.randint(0, 2, (4, 3), generator=g).to(torch.int8),
    }
    space = LabelSpace.aus([1, 2, 4])
    tok = tokenizer_for(cfg.model)
    loss, _ = finetune_step(trained, batch, tok, space, cfg.stage2, None, random.Random(0))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads, bool(model.clip.transformer.grad_checkpointing)


def test_grad_checkpointing_gives_the_same_step() -> None:
    loss, grads, off = _step(False)
    loss_ckpt, grads_ckpt, on = _step(True)
    assert on and not off  # the text tower recomputes its blocks (cpu-tiny's ResNet has none)
    assert abs(loss - loss_ckpt) < 1e-6
    assert grads.keys() == grads_ckpt.keys() and grads
    for name, grad in grads.items():
        assert torch.allclose(grad, grads_ckpt[name], rtol=1e-4, atol=1e-7), name


def test_native_bf16_on_the_cpu_follows_the_cpu_flags() -> None:
    """`native_bf16` reads torch's private CPU checks; the kernel's flags are the truth (a
    torch that renamed them would silently drop AMX machines to fp32 inference)."""
    from pathlib import Path

    from clef_core.method.hardware import CPU_BF16_FLAGS, native_bf16

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo (not Linux)")
    flags = {f for line in cpuinfo.read_text().splitlines() if line.startswith("flags")
             for f in line.split(":", 1)[1].split()}  # fmt: skip
    assert native_bf16(torch.device("cpu")) == any(f in flags for f in CPU_BF16_FLAGS)
