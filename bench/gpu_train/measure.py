"""Timing a `Run` between two synchronisations, and the search for the largest batch."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from bench.gpu_train.config import Run, Settings
from bench.gpu_train.device import free, out_of_memory, peak_gib, reset_peak, sync


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
