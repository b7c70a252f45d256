"""Training steps for both stages, evaluation, optimiser and schedule, as plain torch functions.

Nothing here knows about Ray or MLflow: callers pass batches (dicts of tensors), a device and,
for multi-worker runs, a `gather` function; the Ray layer supplies those.
Batch keys: stage 1 `view1`, `view2` (float [B, 3, S, S]) and `activity` (int64 [B]);
stage 2 `image` and `au` (int8 [B, C], 1/0/-1) or `expression` (int64 [B]).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from clef_core.common.errors import ClefError
from clef_core.method import losses
from clef_core.method.augment import resize
from clef_core.method.config import Stage1Config, Stage2Config
from clef_core.method.dist import unwrap
from clef_core.method.labels import LabelSpace
from clef_core.method.metrics import accuracy, always_present_f1, au_auc, au_f1, macro_ovr_auc
from clef_core.method.model import ClefModel
from clef_core.method.text import activity_prompts, description_prompts, name_prompts

Gather = Callable[[torch.Tensor], torch.Tensor]
# A step's loss parts: detached 0-d tensors on the step's device. Floats only when a pass ends
# (or for an `on_step` callback): a float() per part per step would wait for the GPU each step.
Parts = dict[str, torch.Tensor]
# Called after each optimiser step with the global step and that step's parts as floats.
OnStep = Callable[[int, dict[str, float]], None]


def no_gather(x: torch.Tensor) -> torch.Tensor:
    return x


def warmup_cosine(step: int, total: int, warmup: int, base_lr: float, min_lr: float) -> float:
    """Linear warm-up to base_lr over `warmup` steps, then cosine decay to min_lr at `total`."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; as in CLIP training, gains, biases, embeddings and the logit scale get no decay.
    Fused (one kernel for all parameters) when the model is on CUDA: same update, fewer launches."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = (
            p.ndim < 2
            or "embedding" in name
            or "logit_scale" in name
            or name.endswith("class_embedding")
        )
        (no_decay if skip else decay).append(p)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        fused=(bool(decay + no_decay) and all(p.is_cuda for p in decay + no_decay)) or None,
    )


def autocast_for(device: torch.device, precision: str) -> torch.autocast | nullcontext:
    """bf16 autocast on CUDA for "auto"/"bf16"; full precision on CPU unless asked."""
    use = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else nullcontext()


def tokens(tokenizer: Callable, texts: list[str], device: torch.device) -> torch.Tensor:
    return tokenizer(texts).to(device)


def pretrain_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    tokenizer: Callable,
    activities: list[tuple[str, str]],
    cfg: Stage1Config,
    rng: random.Random,
    gather: Gather = no_gather,
) -> tuple[torch.Tensor, Parts]:
    """Stage 1 (Eq. 2) on one batch; returns the loss to back-propagate and its parts.

    `model` is a `ClefModel`, or one wrapped by DDP (`clef_core.method.dist.distribute`): the
    step calls it once. Each distinct activity in the batch is encoded once (and not at all
    without L_IA); features are gathered across workers (with gradients) before the loss, so
    the loss is that of the global batch.
    """
    device = batch["view1"].device
    act = batch["activity"]
    texts = []
    if cfg.weight_image_activity > 0:
        ids, inverse = torch.unique(act, return_inverse=True)
        prompts = activity_prompts([activities[i] for i in ids.tolist()], rng)
        texts.append(tokens(tokenizer, prompts, device))
    out = model(images=(batch["view1"], batch["view2"]), texts=texts)
    z1, z2 = gather(out.images[0]), gather(out.images[1])  # (B, d) each
    act_all = gather(act)
    if cfg.pairing == "instance":  # each image its own class: positives are its other view only
        act_all = torch.arange(act_all.shape[0], device=act_all.device)
    parts = {}
    total = z1.new_zeros((), dtype=torch.float32)
    if cfg.weight_image_image > 0:
        l_ii = losses.cross_modal_supcon(z1, z2, act_all, cfg.temperature)
        total = total + cfg.weight_image_image * l_ii
        parts["loss_ii"] = l_ii.detach()
    if texts:
        z_act = gather(out.texts[0][inverse])  # (B, d): each row's activity text
        l_ia = losses.cross_modal_supcon(z1, z_act, act_all, cfg.temperature)
        total = total + cfg.weight_image_activity * l_ia
        parts["loss_ia"] = l_ia.detach()
    parts["loss"] = total.detach()
    return total, parts


def class_logits(
    model: ClefModel, z_img: torch.Tensor, z_name: torch.Tensor | None
) -> torch.Tensor:
    """s = z_img . z_name / tau (names) or the linear head's output (ablation): [B, C]."""
    if model.head is not None:
        return model.head(z_img).float()
    assert z_name is not None
    return model.logit_scale() * (z_img @ z_name.T).float()


def finetune_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    tokenizer: Callable,
    space: LabelSpace,
    cfg: Stage2Config,
    weights: torch.Tensor | None,
    rng: random.Random,
) -> tuple[torch.Tensor, Parts]:
    """Stage 2 (Eq. 3-6) on one batch. Names/descriptions are encoded once per step; with the
    linear head (ablation) no text at all. `model`: a `ClefModel` or its DDP wrapper."""
    device = batch["image"].device
    names = unwrap(model).head is None
    texts = []
    if names:
        texts.append(tokens(tokenizer, name_prompts(space.labels), device))
        if cfg.weight_dn > 0:
            texts.append(tokens(tokenizer, description_prompts(space.labels, rng), device))
    out = model(images=(batch["image"],), texts=texts)
    z_img = out.images[0]  # (B, d)
    # s = z_img . z_name / tau; the ablation's linear head gives its own logits
    logits = out.scale * (z_img @ out.texts[0].T).float() if out.head is None else out.head[0]
    if space.kind == "au":
        l_in = losses.au_loss_from_logits(logits, batch["au"], weights)
    else:
        l_in = losses.expression_loss_from_logits(logits, batch["expression"], weights)
    l_dn = torch.zeros((), device=device)
    if len(out.texts) == 2:  # (C, d) descriptions against names
        l_dn = losses.name_description_loss(out.texts[1], out.texts[0], out.scale)
    total = losses.finetune_loss(l_in, cfg.weight_dn * l_dn, cfg.lam)
    return total, {
        "loss": total.detach(),
        "loss_in": l_in.detach(),
        "loss_dn": l_dn.detach(),
    }


StepFn = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, Parts]]


def run_epoch(
    step_fn: StepFn,
    batches: Iterable[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    lr_at: Callable[[int], float],
    step: int,
    device: torch.device,
    precision: str = "auto",
    max_steps: int | None = None,
    on_step: OnStep | None = None,
) -> tuple[int, dict[str, float]]:
    """One pass over `batches`: lr schedule, autocast, backward, AdamW step.

    Returns the global step after the epoch and the mean of each loss part (and of the
    learning rate) over it. The parts are summed on the device; `on_step`, when given, gets
    each step's as floats (a host sync per step: leave it out where speed matters).
    """
    sums: Parts = {}
    lr_sum = 0.0
    count = 0
    for batch in batches:
        if max_steps is not None and count >= max_steps:
            break
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        set_lr(optimizer, lr_at(step))
        # Before the forward: the last step's gradients are freed before activations build up.
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device, precision):
            loss, parts = step_fn(batch)
        loss.backward()  # under DDP (dist.distribute) this also averages across workers
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        for k, v in parts.items():
            sums[k] = sums[k] + v if k in sums else v.float()
        lr_sum += lr
        count += 1
        step += 1
        if on_step is not None:
            on_step(step, {**{k: float(v) for k, v in parts.items()}, "lr": lr})
    if not count:
        return step, {}
    means = dict(zip(sums, (torch.stack(list(sums.values())) / count).tolist(), strict=True))
    return step, {**means, "lr": lr_sum / count}


def run_steps(
    step_fn: StepFn,
    passes: Callable[[int, int], Iterable[dict[str, torch.Tensor]]],
    steps: int,
    optimizer: torch.optim.Optimizer,
    lr_at: Callable[[int], float],
    step: int,
    device: torch.device,
    precision: str = "auto",
    on_step: OnStep | None = None,
) -> tuple[int, dict[str, float]]:
    """One epoch: exactly `steps` optimiser steps (`run_epoch` each pass).

    `passes(k, done)` gives the k-th pass over the training data (`done`: steps taken so far
    in this epoch; either may seed its shuffle). When a pass ends before `steps`, another one
    follows (ours), so the learning-rate schedule, which counts `steps` per epoch, runs whole.
    Returns the global step after the epoch and each loss part's mean over its steps.
    """
    sums: dict[str, float] = {}
    done = k = 0
    while done < steps:
        before = step
        step, means = run_epoch(
            step_fn, passes(k, done), optimizer, lr_at, step, device, precision,
            max_steps=steps - done, on_step=on_step,
        )  # fmt: skip
        taken = step - before
        if taken == 0:
            raise ClefError(
                "a pass over the training data gave no full batch: fewer training rows than "
                "one batch (lower the stage's batch_size, or check the fold's parts)"
            )
        for key, value in means.items():
            sums[key] = sums.get(key, 0.0) + value * taken
        done, k = done + taken, k + 1
    return step, {key: value / done for key, value in sums.items()}


@dataclass
class Predictions:
    scores: np.ndarray  # [N, C] probabilities (AU) or softmax (FER)
    targets: np.ndarray  # [N, C] (AU) or [N] (FER)
    features: np.ndarray  # [N, d] image features, for t-SNE
    rows: np.ndarray | None = None  # [N] int64 `cache.row_key` of each row, when batches carry it


@torch.no_grad()
def predict(
    model: ClefModel,
    batches: Iterable[dict[str, torch.Tensor]],
    tokenizer: Callable,
    space: LabelSpace,
    device: torch.device,
    precision: str = "auto",
) -> Predictions:
    model.eval()
    z_name = None
    if model.head is None:
        z_name = model.encode_text(tokens(tokenizer, name_prompts(space.labels), device))
    scores, targets, feats, rows = [], [], [], []
    for batch in batches:
        if "row" in batch:
            rows.append(batch["row"].cpu().numpy())
        images = batch["image"].to(device)
        if images.dtype == torch.uint8:  # as the data pipeline delivers them (data.py)
            images = resize(images, model.image_size)
        with autocast_for(device, precision):
            z = model.encode_image(images)
            logits = class_logits(model, z, z_name)
        probs = torch.sigmoid(logits) if space.kind == "au" else torch.softmax(logits, -1)
        scores.append(probs.float().cpu().numpy())
        targets.append(batch[space.column].cpu().numpy())
        feats.append(z.float().cpu().numpy())
    model.train()
    if not scores:
        raise ClefError("no held-out rows to score: the test split is empty")
    return Predictions(
        np.concatenate(scores),
        np.concatenate(targets),
        np.concatenate(feats),
        np.concatenate(rows) if rows else None,
    )


def metrics_of(
    pred: Predictions, space: LabelSpace, threshold: float = 0.5, majority: int | None = None
) -> dict[str, float]:
    """The held-out metrics and what to judge them by.

    AUs: f1_au<k> / f1_mean (sigmoid > threshold); f1_baseline_au<k> / f1_baseline_mean, the
    always-present predictor (its mean over the AUs f1_mean averages); auc_au<k> / auc_mean,
    the threshold-free ROC-AUC (an AU with one held-out class has none: left out, not 0.5).
    Expressions: accuracy (argmax), auc_macro (one-vs-rest), and, given the training split's
    majority class, accuracy_baseline: the accuracy of always predicting it.
    """
    if space.kind == "au":
        f1 = au_f1(pred.scores > threshold, pred.targets, space.labels)
        base = always_present_f1(pred.targets, space.labels)
        counted = [a for a in space.labels if a not in f1.undefined]
        out = f1.as_metrics()
        out |= {f"f1_baseline_au{a}": v for a, v in base.per_au.items() if not math.isnan(v)}
        values = [base.per_au[a] for a in counted]
        out["f1_baseline_mean"] = float(np.mean(values)) if values else float("nan")
        return out | au_auc(pred.scores, pred.targets, space.labels).as_metrics()
    out = {
        "accuracy": accuracy(pred.scores.argmax(1), pred.targets),
        "auc_macro": macro_ovr_auc(pred.scores, pred.targets)[0],
    }
    if majority is not None:
        out["accuracy_baseline"] = accuracy(np.full(len(pred.targets), majority), pred.targets)
    return out
