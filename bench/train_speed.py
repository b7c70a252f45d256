"""Benchmark: images/s of the Ray Data pipeline alone, of our stage-1 training step, and of
open_clip's own plain training step (its ClipLoss), same model and batch, in one run.

- pipeline: shards -> JPEG decode -> two augmented views -> `iter_torch_batches`, streamed on a
  local Ray instance (what each training epoch runs), warm passes only;
- ours: `clef_core.method.steps.pretrain_step` (two views, activity texts, Eq. 1 twice) + backward +
  AdamW step;
- open_clip: `model(image, text)` + `open_clip.loss.ClipLoss` + backward + AdamW step.
Our step encodes two views per sample (open_clip's one image and one caption), so it is
compared per image encoded; per sample it does about twice the image work by design.

    .venv/bin/python -m bench.train_speed [--preset cpu-tiny] [--batch 32] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch


def make_shards(root: Path) -> Path:
    from preprocessing.pipeline import PreprocessOptions, finish, plan, process_sequence
    from synthetic.generate import generate
    from synthetic.spec import make_spec

    generate(make_spec(root / "synth", "test", datasets=("bp4d",)), show_progress=False)
    opts = PreprocessOptions("bp4d", root / "synth" / "BP4D", root / "shards", image_size=112)
    sequences, issues = plan(opts)
    finish(opts, [process_sequence(opts, s) for s in sequences], issues)
    return root / "shards"


def pipeline_rate(shards: Path, cfg, batch: int, passes: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Samples/s delivered by the stage-1 pipeline (warm passes: the first is discarded)."""
    import ray

    from clef_core.common.runtime import init_ray
    from clef_core.training.cache import source_size
    from clef_core.training.data import load_split, model_inputs

    init_ray(None)
    side = source_size(cfg.model.image_size, cfg.stage1.augment, cfg.stage2.augment)
    ds = model_inputs(
        load_split(shards, "bp4d"), side, None, cfg.compute.data_cpus, cfg.compute.data_concurrency
    )
    rates = []
    for i in range(passes):
        start, n = time.perf_counter(), 0
        for b in ds.iter_torch_batches(batch_size=batch):
            n += len(b["image"])
        if i:
            rates.append(n / (time.perf_counter() - start))
    ray.shutdown()
    return sum(rates) / len(rates)


def step_rates(cfg, batch: int, steps: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Seconds per step of ours and of open_clip's, interleaved so both see the same machine."""
    import open_clip

    from clef_core.method.model import build_model, tokenizer_for
    from clef_core.method.steps import make_optimizer, pretrain_step

    torch.manual_seed(0)
    model = build_model(cfg.model)
    tok = tokenizer_for(cfg.model)
    opt = make_optimizer(model, 1e-4, 0.01)
    s = cfg.model.image_size
    activities = [("bp4d", f"T{k}") for k in range(1, 9)]
    rng = random.Random(0)
    ours_batch = {
        "view1": torch.randn(batch, 3, s, s),
        "view2": torch.randn(batch, 3, s, s),
        "activity": torch.randint(0, 8, (batch,)),
    }
    images = torch.randn(batch, 3, s, s)
    texts = tok([f"a photo of a person, caption {i}" for i in range(batch)])
    clip_loss = open_clip.loss.ClipLoss()

    def ours() -> None:
        loss, _ = pretrain_step(model, ours_batch, tok, activities, cfg.stage1, rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def theirs() -> None:
        image_features, text_features, logit_scale = model.clip(images, texts)[:3]
        loss = clip_loss(image_features, text_features, logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times: dict[str, list[float]] = {"ours": [], "open_clip": []}
    for i in range(steps + 3):
        for name, fn in (("ours", ours), ("open_clip", theirs)):
            start = time.perf_counter()
            fn()
            if i >= 3:  # warm-up steps not counted
                times[name].append(time.perf_counter() - start)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}  # median seconds per step


def main() -> None:
    from clef_core.common.runtime import configure_process

    configure_process()  # an entry point: the service environment, as `clef` sets it
    from clef_core.method.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-tiny")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.preset)
    per_step = step_rates(cfg, args.batch, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = pipeline_rate(make_shards(Path(tmp)), cfg, args.batch)
    b = args.batch
    rows = {
        "pipeline (samples/s, 2 views each)": pipeline,
        "our stage-1 step (samples/s)": b / per_step["ours"],
        "open_clip step (samples/s)": b / per_step["open_clip"],
        "our stage-1 step (images encoded/s)": 2 * b / per_step["ours"],
        "open_clip step (images encoded/s)": b / per_step["open_clip"],
    }
    for k, v in rows.items():
        print(f"{k:40s} {v:9.1f}")
    ratio = (2 * b / per_step["ours"]) / (b / per_step["open_clip"])
    headroom = pipeline / (b / per_step["ours"])
    print(f"ours / open_clip, images encoded/s: {ratio:.2f} (target >= 0.9)")
    print(f"pipeline / our step consumption, samples/s: {headroom:.2f} (target >= 2)")
    out = Path(".bench")
    out.mkdir(exist_ok=True)
    (out / "train_speed.json").write_text(
        json.dumps({**rows, "ratio": ratio, "headroom": headroom}, indent=1)
    )


if __name__ == "__main__":
    main()
