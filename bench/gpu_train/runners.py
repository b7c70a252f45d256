"""The steps measured: CLEF's stage-1/stage-2 steps as the Ray worker runs them, and
open_clip's own plain training step on the same model; each a `Run` (n more steps)."""

from __future__ import annotations

import math
import random
from typing import Any

import torch

from bench.gpu_train.config import ACTIVITIES, BP4D_AUS, Run, Settings

_TOKENIZERS: dict[Any, Any] = {}


def tokenizer(cfg: Any) -> Any:
    """The model's tokenizer, built once (reading its vocabulary takes a moment)."""
    from clef_core.method.model import tokenizer_for

    key = cfg.model.model_dump_json()
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = tokenizer_for(cfg.model)
    return _TOKENIZERS[key]


def _host(t: torch.Tensor, pin: bool) -> torch.Tensor:
    return t.pin_memory() if pin else t


def _images(b: int, side: int, gen: torch.Generator, pin: bool) -> torch.Tensor:
    """uint8 [b, side, side, 3], as the data pipeline hands them to a worker."""
    return _host(torch.randint(0, 256, (b, side, side, 3), dtype=torch.uint8, generator=gen), pin)


def clef_batches(stage: int, b: int, side: int, pin: bool, count: int) -> list[dict]:
    """Host batches of a stage: stage 1 with all 8 BP4D activities in every batch (so its
    text tower encodes 8 activity texts a step), stage 2 with AU labels (a tenth unknown)."""
    gen = torch.Generator().manual_seed(b)
    out = []
    for _ in range(count):
        batch = {"image": _images(b, side, gen, pin)}
        if stage == 1:
            order = torch.randperm(b, generator=gen)
            batch["activity"] = _host(order % len(ACTIVITIES), pin)
        else:
            au = torch.randint(0, 2, (b, len(BP4D_AUS)), generator=gen)
            au[torch.rand(au.shape, generator=gen) < 0.1] = -1
            batch["au"] = _host(au.to(torch.int8), pin)
        out.append(batch)
    return out


def clef_runner(
    model: Any, cfg: Any, stage: int, b: int, s: Settings, problems: list[str], count: int = 2
) -> Run:
    """n steps of CLEF's stage-`stage` step through `run_epoch`, as the Ray worker runs them.
    A loss that is not finite is added to `problems` (the timing stands)."""
    from clef_core.method.augment import batch_generator, model_views
    from clef_core.method.labels import LabelSpace
    from clef_core.method.steps import finetune_step, make_optimizer, pretrain_step, run_epoch
    from clef_core.training.cache import source_size

    size = cfg.model.image_size
    side = source_size(size, cfg.stage1.augment, cfg.stage2.augment)
    stage_cfg = cfg.stage1 if stage == 1 else cfg.stage2
    lr = cfg.stage1.lr if stage == 1 else cfg.stage2.lr_for("bp4d")
    opt = make_optimizer(model, lr, stage_cfg.weight_decay)
    tok = tokenizer(cfg)
    rng = random.Random(0)
    space = LabelSpace.aus(BP4D_AUS)
    weights = torch.ones(len(BP4D_AUS), device=s.device)
    host = clef_batches(stage, b, side, s.pin, count)
    at = [0]

    def step_fn(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        gen = batch_generator(cfg.seed, 0, 0, at[0])
        at[0] += 1
        if stage == 1:
            views = model_views(batch, size, 2, cfg.stage1.augment, gen)
            return pretrain_step(model, views, tok, ACTIVITIES, cfg.stage1, rng)
        views = model_views(batch, size, 1, cfg.stage2.augment, gen)
        return finetune_step(model, views, tok, space, cfg.stage2, weights, rng)

    def run(n: int) -> None:
        batches = (host[(at[0] + i) % len(host)] for i in range(n))
        # No on_step: as in training, the losses stay on the GPU until the pass ends.
        _, means = run_epoch(
            step_fn, batches, opt, lambda _: lr, 0, s.device, cfg.compute.precision
        )
        if not math.isfinite(means["loss"]):  # a NaN or inf in any step makes the mean one
            problems.append(f"stage {stage}, clef, batch {b}: mean loss {means['loss']}")

    return run


def open_clip_optimizer(clip: Any, lr: float) -> torch.optim.Optimizer:
    """open_clip's AdamW: no weight decay on gains, biases and the logit scale (0.01 on the
    rest), betas 0.9/0.98, eps 1e-6."""

    def no_decay(name: str, p: torch.Tensor) -> bool:
        return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    named = [(n, p) for n, p in clip.named_parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": 0.01},
        ],
        lr=lr, betas=(0.9, 0.98), eps=1e-6,
    )  # fmt: skip


def open_clip_runner(
    model: Any, cfg: Any, b: int, s: Settings, amp: str, problems: list[str], count: int = 2
) -> Run:
    """n steps of open_clip's plain training step (its training/train.py, one GPU): float
    images and tokens from pinned memory, `ClipLoss`, AdamW with its groups (no decay on gains,
    biases and the logit scale; betas 0.9/0.98, eps 1e-6), the logit-scale clamp. `amp`:
    "config" = the config's autocast (bf16 on CUDA), "fp16" = its default `--precision amp`
    (fp16 autocast with a GradScaler)."""
    import open_clip

    from clef_core.method.augment import normalize
    from clef_core.method.steps import autocast_for

    clip = model.clip
    size = cfg.model.image_size
    gen = torch.Generator().manual_seed(b)
    opt = open_clip_optimizer(clip, cfg.stage1.lr)
    loss_fn = open_clip.loss.ClipLoss()
    images = [
        _host(normalize(torch.rand(b, 3, size, size, generator=gen)), s.pin) for _ in range(count)
    ]
    tok = tokenizer(cfg)
    texts = _host(tok([f"a photo of a person, caption {i}" for i in range(b)]), s.pin)
    scaler = torch.amp.GradScaler(s.device.type) if amp == "fp16" else None
    losses: list[torch.Tensor] = []
    done = [0]

    def autocast() -> Any:
        if amp == "fp16":
            return torch.autocast(s.device.type, dtype=torch.float16)
        return autocast_for(s.device, cfg.compute.precision)

    def run(n: int) -> None:
        for _ in range(n):
            image = images[done[0] % count].to(s.device, non_blocking=True)
            text = texts.to(s.device, non_blocking=True)
            done[0] += 1
            opt.zero_grad(set_to_none=True)
            with autocast():
                image_features, text_features, logit_scale = clip(image, text)[:3]
                loss = loss_fn(image_features, text_features, logit_scale)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.detach())  # read at the end: open_clip syncs only to log
        last = torch.stack(losses[-n:]).float().cpu()
        losses.clear()
        if not torch.isfinite(last).all():
            problems.append(f"open_clip ({amp}), batch {b}: losses {last.tolist()}")

    return run
