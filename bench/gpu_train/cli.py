"""`python -m bench.gpu_train`: the flags (`config.parse`), then the run."""

from __future__ import annotations

import os
from typing import Any

import torch

from bench.common import entry
from bench.gpu_train.benchmark import Bench
from bench.gpu_train.config import parse


def main(argv: list[str] | None = None) -> dict[str, Any]:
    # Before CUDA starts: growable segments, so batches near the memory's edge fragment less.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    s = entry(parse, argv)
    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    try:
        return Bench(s).run()
    finally:  # a caller's process (the smoke test's) keeps its own setting
        torch.set_num_threads(threads)
