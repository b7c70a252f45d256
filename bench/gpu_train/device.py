"""Device helpers: synchronisation, memory, the device's name and its matrix-product rate."""

from __future__ import annotations

import gc
import resource
import statistics
import time

import torch

from bench.gpu_train.config import DATASHEET


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
