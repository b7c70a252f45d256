"""The stage-1 loss and its gradient are the same on 1 worker with batch 2b as on 2 workers
with batch b each (features gathered with gradients, gradients averaged by DDP as training
wraps the model: `dist.distribute`); an epoch's logged means are the workers' average
(`training.loop.across_workers`); real torch distributed processes (gloo), no mocks."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clef_core.method.config import load_config
from clef_core.method.dist import distribute, gather_with_grad, unwrap
from clef_core.method.model import build_model, tokenizer_for
from clef_core.method.steps import pretrain_step
from clef_core.training.loop import across_workers

ACTIVITIES = [("bp4d", f"T{k}") for k in range(1, 9)]


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "view1": torch.randn(8, 3, 64, 64, generator=g),
        "view2": torch.randn(8, 3, 64, 64, generator=g),
        "activity": torch.tensor([0, 1, 2, 0, 1, 3, 3, 0]),
    }


def loss_and_grads(
    b: dict[str, torch.Tensor], gather=None
) -> tuple[float, dict[str, torch.Tensor]]:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    # A LayerNorm tower, as the paper's ViT: cpu-tiny's ResNet has BatchNorm, whose batch
    # statistics are per worker on CPUs (no SyncBatchNorm) and differ with the split by design.
    vit = ["model.inline.vision_layers=4", "model.inline.vision_width=128"]
    cfg = load_config("cpu-tiny", [*vit, "model.inline.image_size=64"])  # the views' size
    model = distribute(build_model(cfg.model), torch.device("cpu"))  # DDP on 2 workers
    assert (gather is None) == (model is unwrap(model))
    loss, _ = pretrain_step(
        model,
        b,
        tokenizer_for(cfg.model),
        ACTIVITIES,
        cfg.stage1,
        random.Random(0),
        gather or (lambda x: x),
    )
    loss.backward()  # DDP averages the two workers' gradients here
    return float(loss.detach()), {
        n: p.grad.clone() for n, p in unwrap(model).named_parameters() if p.grad is not None
    }


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        full = batch()
        half = {k: v[rank * 4 : (rank + 1) * 4] for k, v in full.items()}
        loss, grads = loss_and_grads(half, gather_with_grad)
        # Stage 2's loss differs per worker: rank 1 logs 3.0 and 10.0, rank 0 1.0 and 20.0.
        means = {"loss": 1.0 + 2 * rank, "lr": 20.0 - 10 * rank}
        averaged = across_workers(means, gather_with_grad, torch.device("cpu"))
        if rank == 0:
            torch.save({"loss": loss, "grads": grads, "averaged": averaged}, out)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_worker_batch_2b_equals_two_workers_batch_b(tmp_path: Path) -> None:
    single_loss, single_grads = loss_and_grads(batch())
    out = tmp_path / "two.pt"
    mp.start_processes(_worker, args=(free_port(), str(out)), nprocs=2, start_method="spawn")
    two = torch.load(out, weights_only=True)
    assert two["averaged"] == {"loss": 2.0, "lr": 15.0}
    assert abs(two["loss"] - single_loss) < 1e-5 * max(1.0, abs(single_loss))
    assert single_grads.keys() == two["grads"].keys()
    for name, grad in single_grads.items():
        assert torch.allclose(grad, two["grads"][name], rtol=1e-3, atol=1e-6), name
