"""Benchmark on one GPU: CLEF's training steps and `clef predict`'s face scoring, against
open_clip's own training step on the same model, in one run; a JSON and a markdown table.

- Stage 1 (`clef_core.method.steps.pretrain_step`: two augmented views, the batch's activity
  texts, Eq. 1 twice) and stage 2 (`finetune_step` on BP4D's 12 AUs: the image, the label
  names and a description per label), each at the paper's batch (64) and at the largest batch
  that fits (doubling from 64 until CUDA runs out of memory, then two bisections), run as the
  training runs them: `run_epoch` (the config's autocast, AdamW, zero_grad, backward), uint8
  images from pinned host memory, augmented on the GPU (`augment.model_views`); no Ray and no
  data pipeline (the batches are in memory: this measures the GPU step, not the input).
- open_clip's plain training step on the same model and batch: its `ClipLoss`, one image and
  one caption per sample, AdamW with its parameter groups, under the config's autocast (bf16)
  and, on CUDA, also under its default `--precision amp` (fp16 autocast with a GradScaler).
- `clef predict`'s scoring of aligned 224-px face crops (`Predictor.score_crops` on a saved
  stage-2 checkpoint of the same model: pinned copy, resize and bf16 autocast on the GPU).

Every measurement: warm-up steps, then timed steps (about `--seconds`, between `--min-steps`
and `--max-steps`) between two device synchronisations; peak memory is
`torch.cuda.max_memory_allocated` (on the CPU: the process's peak resident size). Model FLOPs
are counted from the model's shapes (printed with the formula; training = 3x the forward);
MFU is model FLOP/s over the GPU's dense bf16 datasheet peak (a measured 8192^3 matrix product
beside it); on other devices, over the measured product. The whole run keeps to `--budget-s`
(a measurement that would not fit is skipped and listed); results are rewritten after every
measurement, so a run cut short keeps what it measured.

    python bench/gpu_train.py                          # paper preset (ViT-B/16) on cuda
    python bench/gpu_train.py --compile --out $OUT     # plus the torch.compile'd model, budget allowing
    .venv/bin/python bench/gpu_train.py --preset cpu-tiny --device cpu --smoke   # smoke test

The GPU switches TF32 (`--tf32`, on by default on CUDA), `--compile` and
`--grad-checkpointing` set the training config's own (`compute.tf32`, `compute.torch_compile`,
`compute.grad_checkpointing`) and are applied by the same functions the Ray worker calls
(`clef_core.method.hardware`).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project's packages
    sys.path.insert(0, str(ROOT))

from clef_core.common.datasets import REGISTRY  # noqa: E402  (after the path above)

PAPER_BATCH = 64
CLIP_TRAIN_GFLOP = 123.0  # ViT-B/16 CLIP training per (image, caption) sample: the figure
TARGETS = {"stage1_mfu": 0.40, "stage1_vs_open_clip": 1.3, "predict_frames_per_s": 1000.0}
BP4D_AUS = REGISTRY["bp4d"].au_ids
ACTIVITIES = [("bp4d", t) for t in REGISTRY["bp4d"].activities]  # T1..T8
CROP = 224  # side of the aligned face crops (preprocessing's default)
# Dense (no sparsity) tensor-core peaks from NVIDIA's datasheets, TFLOP/s: (bf16, tf32). The
# first name contained in torch's device name wins, so the specific names come first.
DATASHEET = (
    ("H200 NVL", 835.0, 417.5),
    ("H200", 989.4, 494.7),
    ("H100 PCIe", 756.0, 378.0),
    ("H100 NVL", 835.0, 417.5),
    ("H100", 989.4, 494.7),
    ("A100", 312.0, 156.0),
    ("L40S", 362.1, 181.0),
)
Run = Callable[[int], None]  # runs n more steps of one kind at one batch


@dataclass
class Settings:
    preset: str
    overrides: list[str]
    device: torch.device
    out: Path
    budget_s: float
    seconds: float  # timed seconds per measurement (about)
    warmup: int
    min_steps: int
    max_steps: int
    max_batch: int | None  # the batch search's cap (None: a multiple of the stage's batch)
    refine: int  # bisections after the first batch that does not fit
    search: bool
    compile: bool
    tf32: bool
    grad_checkpointing: bool
    pin: bool
    predict_batches: list[int]
    predict_crops: int
    peak_tflops: float | None
    matmul_n: int
    smoke: bool
    threads: int | None


def parse(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--preset", default="paper")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--budget-s", type=float, default=400.0, help="the whole run's time box")
    p.add_argument("--seconds", type=float, default=None, help="timed seconds per measurement")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per measurement")
    p.add_argument("--min-steps", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-batch", type=int, default=None, help="cap of the batch search")
    p.add_argument("--refine", type=int, default=None, help="bisections of the batch search")
    p.add_argument("--no-search", dest="search", action="store_false")
    p.add_argument("--compile", action="store_true", help="also torch.compile'd towers")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--predict-batch", type=int, action="append", default=None)
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, if known")
    p.add_argument("--smoke", action="store_true", help="a few steps of everything (CPU test)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (a CPU build of torch?)")

    def pick(value: Any, smoke: Any, cuda_default: Any, cpu_default: Any) -> Any:
        if value is not None:
            return value
        return smoke if a.smoke else cuda_default if cuda else cpu_default

    return Settings(
        preset=a.preset,
        overrides=a.overrides,
        device=device,
        out=a.out,
        budget_s=a.budget_s,
        seconds=pick(a.seconds, 0.2, 6.0, 3.0),
        warmup=pick(a.warmup, 1, 5, 2),
        min_steps=pick(a.min_steps, 1, 5, 2),
        max_steps=pick(a.max_steps, 1, 200, 200),
        max_batch=pick(a.max_batch, None, 8192, None),
        refine=pick(a.refine, 0, 2, 1),
        search=a.search,
        compile=a.compile,
        tf32=pick(a.tf32, False, True, False),
        grad_checkpointing=a.grad_checkpointing,
        pin=pick(a.pin, False, True, False),
        predict_batches=pick(a.predict_batch, [8], [32, 256], [32]),
        predict_crops=pick(None, 16, 1024, 128),
        peak_tflops=a.peak_tflops,
        matmul_n=pick(None, 256, 8192, 1024),
        smoke=a.smoke,
        threads=a.threads,
    )


# --- device helpers -------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    """Peak memory since the last reset (CUDA); on the CPU the process's peak resident size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def out_of_memory(err: BaseException) -> bool:
    """CUDA's allocator, or a library's own allocation (cuBLAS, cuDNN), ran out of memory."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "CUBLAS_STATUS_ALLOC_FAILED" in text
    )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def uses_bf16(device: torch.device, precision: str) -> bool:
    from clef_core.method.steps import autocast_for

    return isinstance(autocast_for(device, precision), torch.autocast)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """A square matrix product's rate on random data, the median of at least 5 timed products
    after 3 warm-ups (METHOD.md: measure the ceiling; never on zeros)."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    for _ in range(3):
        a @ b
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < 0.5:
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e12


def datasheet_tflops(name: str, bf16: bool) -> float | None:
    for key, bf16_peak, tf32_peak in DATASHEET:
        if key in name:
            return bf16_peak if bf16 else tf32_peak
    return None


# --- model FLOPs ----------------------------------------------------------------------------


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


# --- the steps ------------------------------------------------------------------------------


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

    def no_decay(name: str, p: torch.Tensor) -> bool:
        return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    named = [(n, p) for n, p in clip.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": 0.01},
        ],
        lr=cfg.stage1.lr, betas=(0.9, 0.98), eps=1e-6,
    )  # fmt: skip
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


# --- measuring ------------------------------------------------------------------------------


class Clock:
    """The run's time box."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)


def timed(run: Run, s: Settings) -> dict[str, float]:
    """Warm-up steps, then about `s.seconds` of steps between two synchronisations."""
    reset_peak(s.device)
    sync(s.device)
    start = time.perf_counter()
    run(s.warmup)
    sync(s.device)
    warm = time.perf_counter() - start
    steps = s.min_steps
    if s.max_steps > s.min_steps:
        # Steps are asynchronous, so one more step between synchronisations, after the
        # warm-up (compilation, allocation and autotuning done), estimates a step's time.
        start = time.perf_counter()
        run(1)
        sync(s.device)
        estimate = time.perf_counter() - start
        steps = int(min(s.max_steps, max(s.min_steps, s.seconds / max(estimate, 1e-6))))
    start = time.perf_counter()
    run(steps)
    sync(s.device)
    elapsed = time.perf_counter() - start
    return {
        "steps": steps,
        "step_s": elapsed / steps,
        "warmup_s": warm,
        "peak_memory_gib": peak_gib(s.device),
    }


def fits(make: Callable[[int], Run], b: int, model: Any, s: Settings) -> bool:
    """Two steps at batch b (the second holds the optimizer's state too) without running out
    of memory."""
    ok, run = True, None
    try:
        run = make(b)
        run(2)
        sync(s.device)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
        if not out_of_memory(err):
            raise
        ok = False  # the exception, and the frames holding the step's tensors, are gone below
    run = None
    model.zero_grad(set_to_none=True)  # what a step cut short left
    free(s.device)
    return ok


def largest_batch(
    make: Callable[[int], Run], start: int, model: Any, s: Settings, clock: Clock
) -> dict[str, Any]:
    """The largest batch that fits, searched upward from `start`: doubling until one does not
    fit (or the cap: `s.max_batch`, else twice `start` in a smoke run and 4x on a CPU), then
    `s.refine` bisections, batches in multiples of 8."""
    cap = s.max_batch or (2 if s.smoke else 4) * start
    probes: list[list[int]] = []
    ok, bad, b = None, None, start
    while b <= cap and clock.left() > 30:
        good = fits(make, b, model, s)
        probes.append([b, int(good)])
        print(f"  batch {b}: {'fits' if good else 'out of memory'}", flush=True)
        if not good:
            bad = b
            break
        ok, b = b, b * 2
    for _ in range(s.refine if ok and bad else 0):
        mid = (ok + bad) // 2 // 8 * 8  # type: ignore[operator]
        if mid <= ok or mid >= bad or clock.left() < 30:
            break
        good = fits(make, mid, model, s)
        probes.append([mid, int(good)])
        print(f"  batch {mid}: {'fits' if good else 'out of memory'}", flush=True)
        ok, bad = (mid, bad) if good else (ok, mid)
    return {"batch": ok, "probes": probes, "capped": bad is None, "cap": cap}


# --- the run --------------------------------------------------------------------------------


class Bench:
    def __init__(self, s: Settings) -> None:
        from clef_core.method.config import load_config

        self.s = s
        self.cfg = load_config(s.preset, s.overrides)
        self.clock = Clock(s.budget_s)
        self.results: dict[str, Any] = {
            "settings": {},
            "flops": {},
            "peak": {},
            "measurements": [],
            "largest_batch": {},
            "ratios": [],
            "predict": [],
            "targets": TARGETS,
            "skipped": [],
            "problems": [],  # losses that were not finite
        }
        self.flops: TowerFlops | None = None
        self.peak_flops = 0.0

    # results

    def save(self) -> None:
        self.results["wall_s"] = round(time.perf_counter() - self.clock.start, 1)
        self.s.out.mkdir(parents=True, exist_ok=True)
        (self.s.out / "gpu_train.json").write_text(json.dumps(self.results, indent=1))
        (self.s.out / "gpu_train.md").write_text(markdown(self.results))

    def skip(self, what: str, why: str) -> None:
        print(f"  skipped {what}: {why}", flush=True)
        self.results["skipped"].append(f"{what}: {why}")

    # set-up

    def model(self, compiled: bool = False) -> Any:
        from clef_core.method.hardware import prepare_model
        from clef_core.method.model import build_model

        torch.manual_seed(self.cfg.seed)
        c = self.cfg
        model = build_model(c.model, c.stage2.logit_scale_init, c.stage2.logit_scale_max)
        model.to(self.s.device).train()
        # The training's own switches (compute.grad_checkpointing / torch_compile), applied as
        # the Ray worker applies them; one process, so no DDP wrapper.
        compute = c.compute.model_copy(
            update={"grad_checkpointing": self.s.grad_checkpointing, "torch_compile": compiled}
        )
        return prepare_model(model, compute, self.s.device)

    def setup(self) -> None:
        s, cfg = self.s, self.cfg
        from clef_core.method.hardware import configure_device

        configure_device(cfg.compute.model_copy(update={"tf32": s.tf32}), s.device)
        bf16 = uses_bf16(s.device, cfg.compute.precision)
        name = device_name(s.device)
        self.results["settings"] = {
            "preset": s.preset,
            "overrides": s.overrides,
            "arch": cfg.model.arch,
            "image_size": cfg.model.image_size,
            "device": str(s.device),
            "device_name": name,
            "torch": torch.__version__,
            "precision": cfg.compute.precision,
            "autocast_bf16": bf16,
            "tf32": s.tf32,
            "compile": s.compile,
            "grad_checkpointing": s.grad_checkpointing,
            "pinned_memory": s.pin,
            "budget_s": s.budget_s,
            "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
        }
        dtype = torch.bfloat16 if bf16 else torch.float32
        measured = matmul_tflops(s.device, dtype, s.matmul_n)
        sheet = s.peak_tflops or datasheet_tflops(name, bf16)
        self.peak_flops = (sheet or measured) * 1e12
        self.results["peak"] = {
            "datasheet_tflops": sheet,
            "matmul_tflops": round(measured, 2),
            "matmul": f"{s.matmul_n}^3 {'bf16' if bf16 else 'fp32'}",
            "mfu_basis": "datasheet" if sheet else "measured matrix product",
        }
        print(f"{name}: {'bf16' if bf16 else 'fp32'} matrix product {measured:.1f} TFLOP/s"
              + (f", datasheet {sheet:.0f}" if sheet else ""), flush=True)  # fmt: skip
        model = self.model()
        self.flops = f = tower_flops(model, s.device)
        del model
        free(s.device)
        clip_sample = 3 * (f.image + f.text)
        self.results["flops"] = {
            "image_forward_gflop": f.image / 1e9,
            "text_forward_gflop": f.text / 1e9,
            "image_formula": f.image_formula,
            "text_formula": f.text_formula,
            "image_counted_gflop": f.image_counted / 1e9,
            "text_counted_gflop": f.text_counted / 1e9,
            "clip_train_gflop_per_sample": clip_sample / 1e9,
            "issue_figure_gflop": CLIP_TRAIN_GFLOP,
            "training": "3 x forward (the backward is twice the forward)",
            "stage1_step": "3 x (2B x image + K x text), K = distinct activities in the batch (8)",
            "stage2_step": "3 x (B x image + 2C x text), C = 12 AUs (names and descriptions)",
            "open_clip_step": "3 x B x (image + text)",
            "predict": "1 x image per frame (forward only)",
        }
        print(f"image tower forward: {f.image_formula} (torch's counter: "
              f"{f.image_counted / 1e9:.2f})", flush=True)  # fmt: skip
        print(f"text tower forward:  {f.text_formula} (torch's counter: "
              f"{f.text_counted / 1e9:.2f})", flush=True)  # fmt: skip
        print(f"CLIP training, one image + one caption: 3 x ({f.image / 1e9:.2f} + "
              f"{f.text / 1e9:.2f}) = {clip_sample / 1e9:.1f} GFLOP per sample (issue: "
              f"{CLIP_TRAIN_GFLOP:.0f})", flush=True)  # fmt: skip

    def step_flops(self, step: str, stage: int, b: int) -> tuple[float, int]:
        """Model FLOPs of one training step and image-tower passes per step."""
        f = self.flops
        assert f is not None
        if step != "clef":
            return 3 * b * (f.image + f.text), b
        if stage == 1:
            return 3 * (2 * b * f.image + len(ACTIVITIES) * f.text), 2 * b
        return 3 * (b * f.image + 2 * len(BP4D_AUS) * f.text), b

    # measurements

    def measure(
        self, stage: int, step: str, b: int, kind: str, model: Any, compiled: bool = False
    ) -> dict[str, Any] | None:
        s = self.s
        label = f"stage {stage}, {step}, batch {b}{', compiled' if compiled else ''}"
        need = 4 * s.seconds + (150 if compiled else 10)
        if self.clock.left() < need:
            self.skip(label, f"{self.clock.left():.0f} s left of the time budget")
            return None
        print(f"{label} ...", flush=True)
        run: Run | None = None
        t = None
        try:
            problems = self.results["problems"]
            if step == "clef":
                run = clef_runner(model, self.cfg, stage, b, s, problems)
            else:
                amp = "fp16" if step == "open_clip amp fp16" else "config"
                run = open_clip_runner(model, self.cfg, b, s, amp, problems)
            t = timed(run, s)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
            if not out_of_memory(err):
                raise
            self.skip(label, "out of memory")
        run = None  # its optimizer state and batches
        model.zero_grad(set_to_none=True)
        free(s.device)
        if t is None:
            return None
        flops, images = self.step_flops(step, stage, b)
        m = {
            "stage": stage,
            "step": step,
            "batch": b,
            "batch_kind": kind,
            "compiled": compiled,
            "samples_per_s": b / t["step_s"],
            "images_per_s": images / t["step_s"],
            "step_ms": 1000 * t["step_s"],
            "gflop_per_sample": flops / b / 1e9,
            "tflops": flops / t["step_s"] / 1e12,
            "mfu": flops / t["step_s"] / self.peak_flops,
            "peak_memory_gib": t["peak_memory_gib"],
            "steps": t["steps"],
            "warmup_s": t["warmup_s"],
        }
        print(f"  {m['samples_per_s']:.1f} samples/s, {m['step_ms']:.1f} ms/step, "
              f"{m['tflops']:.1f} TFLOP/s, MFU {100 * m['mfu']:.1f}%, "
              f"peak {m['peak_memory_gib']:.2f} GiB", flush=True)  # fmt: skip
        self.results["measurements"].append(m)
        self.save()
        return m

    def ratio(self, ours: dict | None, theirs: dict | None) -> None:
        if not ours or not theirs:
            return
        r = {
            "stage": ours["stage"],
            "batch": ours["batch"],
            "compiled": ours["compiled"],
            "vs": theirs["step"],
            "flops_ratio": ours["tflops"] / theirs["tflops"],
            "samples_ratio": ours["samples_per_s"] / theirs["samples_per_s"],
            "images_ratio": ours["images_per_s"] / theirs["images_per_s"],
        }
        self.results["ratios"].append(r)
        print(f"  CLEF / {theirs['step']}: model FLOP/s {r['flops_ratio']:.2f}, "
              f"samples/s {r['samples_ratio']:.2f}, images/s {r['images_ratio']:.2f}", flush=True)  # fmt: skip

    def baselines(self) -> list[str]:
        cuda = self.s.device.type == "cuda"
        return ["open_clip"] + (["open_clip amp fp16"] if cuda else [])

    def stage(self, stage: int, compiled: bool = False) -> None:
        s = self.s
        paper = (self.cfg.stage1 if stage == 1 else self.cfg.stage2).batch_size
        model = self.model(compiled)
        batches = [(paper, "paper")]
        if compiled:  # the largest batch the eager search found, if any
            found = self.results["largest_batch"].get(f"stage{stage}", {}).get("batch")
            if found and found != paper:
                batches.append((found, "largest"))
        for i, (b, kind) in enumerate(batches):  # the search below appends the largest batch
            ours = self.measure(stage, "clef", b, kind, model, compiled)
            for step in self.baselines() if not compiled else ["open_clip"]:
                self.ratio(ours, self.measure(stage, step, b, kind, model, compiled))
            if compiled or i or not s.search:
                continue
            if self.clock.left() < 60:
                self.skip(f"stage {stage} batch search", "time budget")
                continue
            print(f"stage {stage}: the largest batch that fits ...", flush=True)
            found = largest_batch(
                lambda b: clef_runner(model, self.cfg, stage, b, s, [], count=1),
                paper, model, s, self.clock,
            )  # fmt: skip
            self.results["largest_batch"][f"stage{stage}"] = found
            self.save()
            if found["batch"] and found["batch"] != paper:
                batches.append((found["batch"], "largest"))
        model = None  # the next stage starts on a free device
        free(s.device)

    def predict(self) -> None:
        from clef_core.inference.predictor import Predictor
        from clef_core.method.checkpoint import save_checkpoint
        from clef_core.method.labels import LabelSpace

        s = self.s
        if self.clock.left() < 4 * s.seconds + 10:
            self.skip("clef predict", "time budget")
            return
        f = self.flops
        assert f is not None
        crops = np.random.default_rng(0).integers(
            0, 256, (s.predict_crops, CROP, CROP, 3), dtype=np.uint8
        )
        with tempfile.TemporaryDirectory(prefix="clef-gpu-bench-") as tmp:
            model = self.model()
            ckpt = save_checkpoint(
                Path(tmp) / "model", model, self.cfg, 2, 0, 0, LabelSpace.aus(BP4D_AUS)
            )
            del model
            free(s.device)
            for b in s.predict_batches:
                print(f"clef predict, aligned crops, batch {b} ...", flush=True)
                predictor = Predictor.from_uri(str(ckpt), str(s.device), b)
                chunks = [crops[i : i + b] for i in range(0, len(crops) - b + 1, b)] or [crops]
                reset_peak(s.device)
                for chunk in chunks[:2]:  # warm-up
                    predictor.score_crops(chunk)
                sync(s.device)
                frames, times, start = 0, [], time.perf_counter()
                while frames < 2 * len(crops) or time.perf_counter() - start < s.seconds:
                    for chunk in chunks:
                        t0 = time.perf_counter()
                        rows = predictor.score_crops(chunk)  # ends reading results back
                        times.append((time.perf_counter() - t0) / len(chunk))
                        frames += len(rows)
                    if s.smoke:
                        break
                elapsed = time.perf_counter() - start
                rate = frames / elapsed
                m = {
                    "batch": b,
                    "frames_per_s": rate,
                    "median_ms_per_frame": 1000 * statistics.median(times),
                    "tflops": rate * f.image / 1e12,
                    "mfu": rate * f.image / self.peak_flops,
                    "peak_memory_gib": peak_gib(s.device),
                    "frames": frames,
                }
                print(f"  {rate:.0f} frames/s, MFU {100 * m['mfu']:.1f}%, "
                      f"peak {m['peak_memory_gib']:.2f} GiB", flush=True)  # fmt: skip
                self.results["predict"].append(m)
                self.save()
                del predictor
                free(s.device)

    def run(self) -> dict[str, Any]:
        self.setup()
        self.save()
        self.stage(1)
        self.predict()
        self.stage(2)
        if self.s.compile:
            for stage in (1, 2):
                try:
                    self.stage(stage, compiled=True)
                except Exception as err:  # a compiler's failure: the eager figures stand
                    import traceback

                    traceback.print_exc()
                    self.skip(f"stage {stage} compiled", f"{type(err).__name__}: {err}"[:300])
                    free(self.s.device)
        self.save()
        print(markdown(self.results), flush=True)
        return self.results


# --- the table ------------------------------------------------------------------------------


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def markdown(r: dict[str, Any]) -> str:
    st, pk, fl = r["settings"], r["peak"], r["flops"]
    lines = [
        f"# GPU benchmark: {st.get('arch')} ({st.get('preset')} preset) on {st.get('device_name')}",
        "",
        f"torch {st.get('torch')}, autocast bf16: {st.get('autocast_bf16')}, TF32: "
        f"{st.get('tf32')}, pinned memory: {st.get('pinned_memory')}, gradient checkpointing: "
        f"{st.get('grad_checkpointing')}, wall {r.get('wall_s')} s.",
        f"MFU basis: {pk.get('mfu_basis')} ({_fmt(pk.get('datasheet_tflops'))} TFLOP/s "
        f"datasheet; measured {pk.get('matmul')} matrix product {_fmt(pk.get('matmul_tflops'))} "
        "TFLOP/s).",
        "",
        "| stage | step | batch | compiled | samples/s | images/s | ms/step | GFLOP/sample "
        "| TFLOP/s | MFU | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in r["measurements"]:
        lines.append(
            f"| {m['stage']} | {m['step']} | {m['batch']} ({m['batch_kind']}) | "
            f"{'yes' if m['compiled'] else 'no'} | {_fmt(m['samples_per_s'])} | "
            f"{_fmt(m['images_per_s'])} | {_fmt(m['step_ms'])} | {_fmt(m['gflop_per_sample'])} | "
            f"{_fmt(m['tflops'])} | {100 * m['mfu']:.1f}% | {m['peak_memory_gib']:.2f} |"
        )
    if r["ratios"]:
        lines += [
            "",
            "CLEF's step over open_clip's on the same model and batch (model FLOP/s is the "
            "work done per second: a CLEF stage-1 sample is two images and an eighth of a text "
            "batch, open_clip's one image and one caption):",
            "",
            "| stage | batch | compiled | vs | model FLOP/s | samples/s | images/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in r["ratios"]:
            lines.append(
                f"| {x['stage']} | {x['batch']} | {'yes' if x['compiled'] else 'no'} | "
                f"{x['vs']} | {x['flops_ratio']:.2f} | {x['samples_ratio']:.2f} | "
                f"{x['images_ratio']:.2f} |"
            )
    if r["largest_batch"]:
        lines += [""]
        for k, v in r["largest_batch"].items():
            probes = ", ".join(f"{b} {'ok' if ok else 'OOM'}" for b, ok in v["probes"])
            cap = f" (the search's cap, {v['cap']})" if v["capped"] else ""
            lines.append(f"- {k}: largest batch {v['batch']}{cap}; probes: {probes}")
    if r["predict"]:
        lines += [
            "",
            "`clef predict`, scoring aligned 224-px crops (`Predictor.score_crops`):",
            "",
            "| batch | frames/s | ms/frame (median) | TFLOP/s | MFU | peak GiB |",
            "|---|---|---|---|---|---|",
        ]
        for p in r["predict"]:
            lines.append(
                f"| {p['batch']} | {_fmt(p['frames_per_s'], 0)} | "
                f"{p['median_ms_per_frame']:.3f} | {_fmt(p['tflops'])} | {100 * p['mfu']:.1f}% | "
                f"{p['peak_memory_gib']:.2f} |"
            )
    if fl:
        lines += [
            "",
            "Model FLOPs (forward; training = 3x):",
            f"- image tower: {fl['image_formula']} (torch's counter: "
            f"{fl['image_counted_gflop']:.2f}; it misses the attention products where "
            "attention does not run through a kernel it knows)",
            f"- text tower: {fl['text_formula']} (torch's counter: {fl['text_counted_gflop']:.2f})",
            f"- CLIP training per image + caption: {fl['clip_train_gflop_per_sample']:.1f} GFLOP "
            f"(the issue: about {fl['issue_figure_gflop']:.0f})",
            f"- CLEF stage 1: {fl['stage1_step']}; stage 2: {fl['stage2_step']}; open_clip: "
            f"{fl['open_clip_step']}",
        ]
    lines += ["", "Targets:"] + [f"- {t}" for t in target_lines(r)]
    if r["skipped"]:
        lines += ["", "Skipped:"] + [f"- {x}" for x in r["skipped"]]
    if r["problems"]:
        lines += ["", "Losses that were not finite:"] + [f"- {x}" for x in r["problems"]]
    return "\n".join(lines) + "\n"


def target_lines(r: dict[str, Any]) -> list[str]:
    t = r["targets"]
    out = []
    s1 = [m for m in r["measurements"] if m["stage"] == 1 and m["step"] == "clef"]
    if s1:
        best = max(s1, key=lambda m: m["mfu"])
        out.append(
            f"stage 1 MFU >= {100 * t['stage1_mfu']:.0f}% on an H100/H200: best "
            f"{100 * best['mfu']:.1f}% (batch {best['batch']}"
            f"{', compiled' if best['compiled'] else ''}) "
            f"{'met' if best['mfu'] >= t['stage1_mfu'] else 'not met'}"
        )
    for vs in ("open_clip amp fp16", "open_clip"):
        rs = [x for x in r["ratios"] if x["stage"] == 1 and x["vs"] == vs]
        if rs:
            best_r = max(rs, key=lambda x: x["flops_ratio"])
            out.append(
                f"stage 1 >= {t['stage1_vs_open_clip']}x {vs}'s step (model FLOP/s): best "
                f"{best_r['flops_ratio']:.2f}x (batch {best_r['batch']}; samples/s "
                f"{best_r['samples_ratio']:.2f}x) "
                f"{'met' if best_r['flops_ratio'] >= t['stage1_vs_open_clip'] else 'not met'}"
            )
    if r["predict"]:
        best_p = max(p["frames_per_s"] for p in r["predict"])
        goal = t["predict_frames_per_s"]
        out.append(
            f"predict >= {goal:,.0f} frames/s: {best_p:,.0f} {'met' if best_p >= goal else 'not met'}"
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    # Before CUDA starts: growable segments, so batches near the memory's edge fragment less.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    from clef_core.common.runtime import configure_process

    configure_process()  # an entry point: the service environment, as `clef` sets it
    s = parse(argv)
    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    try:
        return Bench(s).run()
    finally:  # a caller's process (the smoke test's) keeps its own setting
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
