"""Multi-worker training with explicit gradient semantics (the open_clip way).

`gather_with_grad` concatenates a tensor from every worker with gradients flowing back to
each worker's own slice, so the contrastive loss of Eq. 1 is computed over the global batch:
its value does not depend on how the batch is split across workers. The backward of the
gather sums, on each worker, the gradients that every worker's (identical) loss sends to its
slice, i.e. W times the gradient of the loss through that slice; DDP (`distribute`) then
averages the workers' gradients (their sum over W), which is exactly the single-worker
gradient of the global batch (tests/method/test_dist.py checks it against one worker with the
whole batch). Stage 2's loss is per sample: each worker's gradient is its local batch's mean,
and DDP's average is the global batch's mean.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """cat over workers of x [n, ...] -> [W * n, ...], in rank order; identity on one worker."""
    if world_size() == 1:
        return x
    if not x.dtype.is_floating_point:  # labels: no gradient to carry
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)
    return torch.cat(dist_fn.all_gather(x.contiguous()))


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def distribute(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` under DistributedDataParallel when several workers train (the model itself on
    one): gradients are averaged in buckets that overlap the backward pass.

    - `find_unused_parameters`: some parameters get no gradient (stage 1 never uses the logit
      scale; the linear-head ablation no text tower) and which ones may change between steps;
      DDP finds them by walking the step's graph. `static_graph` (learn them once in the first
      step) failed on a 2-worker stage 2 of cpu-tiny under `ray job submit`: the logit scale
      used in the first step and not in the second on rank 0 (tests/flows/test_end_to_end.py).
      open_clip's gradient checkpointing is non-reentrant, so it works with either.
    - BatchNorm towers (ResNet) on GPUs become SyncBatchNorm: batch statistics over the
      global batch, as on one worker. On CPUs (gloo) SyncBatchNorm does not run: each worker
      keeps its own batch statistics. CLIP's ViT has LayerNorm only.

    Call it after the weights are loaded; the optimiser may already hold the parameters
    (SyncBatchNorm keeps the same parameter objects). Step functions call the wrapper;
    checkpoints and scoring use `unwrap(model)`.
    """
    if world_size() == 1:
        return model
    if device.type == "cuda" and has_batchnorm(model):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" and device.index is not None else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (and a `torch.compile` one): what checkpoints save,
    so their keys are the plain model's."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model
