"""Multi-worker helpers with explicit gradient semantics (the open_clip way).

`gather_with_grad` concatenates a tensor from every worker with gradients flowing back to
each worker's own slice, so the contrastive loss of Eq. 1 is computed over the global batch:
its value does not depend on how the batch is split across workers. The backward of the
gather sums, on each worker, the gradients that every worker's (identical) loss sends to its
slice, i.e. W times the gradient of the loss; `average_gradients` (or DDP's averaging) then
divides by W, which gives exactly the single-worker gradient of the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


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


def average_gradients(model: nn.Module) -> None:
    """All-reduce and average gradients across workers (no-op on one worker)."""
    w = world_size()
    if w == 1:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= w
