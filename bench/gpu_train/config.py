"""The GPU benchmark's constants and settings (its command line)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clef_core.common.datasets import REGISTRY

ROOT = Path(__file__).resolve().parents[2]  # the repository
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


def _parser() -> argparse.ArgumentParser:
    from bench import gpu_train  # the package's docstring: the benchmark's

    doc = gpu_train.__doc__
    description = doc.splitlines()[0] if doc else None
    p = argparse.ArgumentParser(prog="python -m bench.gpu_train", description=description)
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
    return p


def parse(argv: list[str] | None) -> Settings:
    """The settings: the flags, and for those not given the defaults of a smoke run, of CUDA
    or of the CPU."""
    a = _parser().parse_args(argv)
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
