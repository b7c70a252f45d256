"""Where a stage-2 step's time goes: the step of `method.steps.finetune_step` taken apart into
timed sections (the same calls, in its order), on the in-memory batch, in this process."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.train_speed.measure import Setup
from clef_core.method import losses
from clef_core.method.augment import model_views
from clef_core.method.steps import tokens
from clef_core.method.text import description_prompts, name_prompts

CPU = torch.device("cpu")


class Sections:
    """Wall seconds of each named section, summed per step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.start = 0.0

    def new_step(self) -> None:
        self.steps.append({})
        self.start = time.perf_counter()

    def mark(self, name: str) -> None:
        """The time since the last mark goes to `name`."""
        now = time.perf_counter()
        self.steps[-1][name] = self.steps[-1].get(name, 0.0) + now - self.start
        self.start = now

    def medians(self, skip: int) -> dict[str, float]:
        """Each section's median milliseconds over the steps after the first `skip`."""
        kept = self.steps[skip:]
        return {k: 1000 * statistics.median(s[k] for s in kept) for k in kept[0]}


def profile_stage2(s: Setup, steps: int, warm: int, threads: int) -> dict[str, float]:
    """Median ms of each section of a stage-2 step (names + descriptions head), and of each
    tower's forward + backward alone (how the backward pass splits between them)."""
    stage, cfg = s.stage, s.stage.cfg
    assert stage.space is not None and stage.plan.weights is not None
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    model = stage.build_model()
    opt = stage.optimizer(model)
    tok, space, s2 = stage.tokenizer, stage.space, cfg.stage2
    weights = torch.tensor(stage.plan.weights)
    rng, gen = random.Random(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    t = Sections()
    for _ in range(steps):
        t.new_step()
        views = model_views(s.batch, cfg.model.image_size, 1, stage.augment, gen)
        t.mark("augmentation (worker side)")
        names = tokens(tok, name_prompts(space.labels), CPU)
        descriptions = tokens(tok, description_prompts(space.labels, rng), CPU)
        t.mark("tokenizing names + descriptions")
        opt.zero_grad(set_to_none=True)
        z_img = model.encode_image(views["image"])  # (B, d)
        t.mark("image tower forward")
        z_name, z_desc = model.encode_text(names), model.encode_text(descriptions)  # (C, d)
        t.mark("text tower forward (names, descriptions)")
        scale = model.logit_scale()
        l_in = losses.au_loss_from_logits(scale * (z_img @ z_name.T).float(), views["au"], weights)
        l_dn = losses.name_description_loss(z_desc, z_name, scale)
        total = losses.finetune_loss(l_in, s2.weight_dn * l_dn, s2.lam)
        t.mark("losses (Eq. 3-6)")
        total.backward()
        t.mark("backward (both towers)")
        opt.step()
        t.mark("AdamW step")
    table = t.medians(warm)
    table["whole step (sum of the above)"] = sum(table.values())
    images = model_views(s.batch, cfg.model.image_size, 1, stage.augment, gen)["image"]
    text = torch.cat([names, descriptions])
    table["image tower fwd + bwd alone"] = _fwd_bwd(
        model, lambda: model.encode_image(images), steps, warm
    )
    table["text tower fwd + bwd alone"] = _fwd_bwd(
        model, lambda: model.encode_text(text), steps, warm
    )
    return table


def _fwd_bwd(model: torch.nn.Module, forward: Callable[[], Any], steps: int, warm: int) -> float:
    """Median ms of `forward()` and a backward pass from its sum."""
    times = []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        forward().sum().backward()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[warm:])
