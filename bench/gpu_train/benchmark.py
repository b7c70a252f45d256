"""The run: set-up, each stage's measurements against open_clip's, `clef predict`'s scoring;
results rewritten after every measurement."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.gpu_train.config import (
    ACTIVITIES,
    BP4D_AUS,
    CLIP_TRAIN_GFLOP,
    CROP,
    TARGETS,
    Run,
    Settings,
)
from bench.gpu_train.device import (
    datasheet_tflops,
    device_name,
    free,
    matmul_tflops,
    out_of_memory,
    peak_gib,
    reset_peak,
    sync,
    uses_bf16,
)
from bench.gpu_train.flops import TowerFlops, tower_flops
from bench.gpu_train.measure import Clock, largest_batch, timed
from bench.gpu_train.report import markdown
from bench.gpu_train.runners import clef_runner, open_clip_runner


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
        """The device configured as training configures it; the settings, the MFU's peak and
        the model's FLOPs recorded."""
        s, cfg = self.s, self.cfg
        from clef_core.method.hardware import configure_device

        configure_device(cfg.compute.model_copy(update={"tf32": s.tf32}), s.device)
        bf16 = uses_bf16(s.device, cfg.compute.precision)
        name = device_name(s.device)
        self.results["settings"] = self.settings(name, bf16)
        self.peak(name, bf16)
        self.count_flops()

    def settings(self, name: str, bf16: bool) -> dict[str, Any]:
        s, cfg = self.s, self.cfg
        return {
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

    def peak(self, name: str, bf16: bool) -> None:
        """The MFU's basis: the datasheet's peak (or --peak-tflops), else a measured product."""
        s = self.s
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

    def count_flops(self) -> None:
        """The towers' forward FLOPs (formula and torch's counter) and each step's."""
        s = self.s
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
        """`clef predict`'s scoring of aligned crops, at each --predict-batch, on a saved
        stage-2 checkpoint of the model."""
        from clef_core.method.checkpoint import save_checkpoint
        from clef_core.method.labels import LabelSpace

        s = self.s
        if self.clock.left() < 4 * s.seconds + 10:
            self.skip("clef predict", "time budget")
            return
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
                self.predict_batch(ckpt, crops, b)

    def predict_batch(self, ckpt: Path, crops: np.ndarray, b: int) -> None:
        """Frames/s of scoring `crops` in batches of b: warm-up, then at least twice the crops
        and about --seconds."""
        from clef_core.inference.predictor import Predictor

        s, f = self.s, self.flops
        assert f is not None
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
