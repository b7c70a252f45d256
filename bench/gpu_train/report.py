"""The markdown table of a run's results."""

from __future__ import annotations

from typing import Any

from bench.common import table_lines


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def markdown(r: dict[str, Any]) -> str:
    """The whole report: settings, measurements, ratios, batch search, `clef predict`, FLOPs,
    targets, and what was skipped or not finite."""
    lines = _header(r) + [""] + _measurements(r["measurements"])
    if r["ratios"]:
        lines += _ratios(r["ratios"])
    if r["largest_batch"]:
        lines += [""] + _largest_batches(r["largest_batch"])
    if r["predict"]:
        lines += _predict(r["predict"])
    if r["flops"]:
        lines += _flops(r["flops"])
    lines += ["", "Targets:"] + [f"- {t}" for t in target_lines(r)]
    if r["skipped"]:
        lines += ["", "Skipped:"] + [f"- {x}" for x in r["skipped"]]
    if r["problems"]:
        lines += ["", "Losses that were not finite:"] + [f"- {x}" for x in r["problems"]]
    return "\n".join(lines) + "\n"


def _header(r: dict[str, Any]) -> list[str]:
    st, pk = r["settings"], r["peak"]
    return [
        f"# GPU benchmark: {st.get('arch')} ({st.get('preset')} preset) on {st.get('device_name')}",
        "",
        f"torch {st.get('torch')}, autocast bf16: {st.get('autocast_bf16')}, TF32: "
        f"{st.get('tf32')}, pinned memory: {st.get('pinned_memory')}, gradient checkpointing: "
        f"{st.get('grad_checkpointing')}, wall {r.get('wall_s')} s.",
        f"MFU basis: {pk.get('mfu_basis')} ({_fmt(pk.get('datasheet_tflops'))} TFLOP/s "
        f"datasheet; measured {pk.get('matmul')} matrix product {_fmt(pk.get('matmul_tflops'))} "
        "TFLOP/s).",
    ]


def _measurements(measurements: list[dict[str, Any]]) -> list[str]:
    header = ["stage", "step", "batch", "compiled", "samples/s", "images/s", "ms/step",
              "GFLOP/sample", "TFLOP/s", "MFU", "peak GiB"]  # fmt: skip
    rows = [
        [m["stage"], m["step"], f"{m['batch']} ({m['batch_kind']})",
         "yes" if m["compiled"] else "no", _fmt(m["samples_per_s"]), _fmt(m["images_per_s"]),
         _fmt(m["step_ms"]), _fmt(m["gflop_per_sample"]), _fmt(m["tflops"]),
         f"{100 * m['mfu']:.1f}%", f"{m['peak_memory_gib']:.2f}"]
        for m in measurements
    ]  # fmt: skip
    return table_lines(header, rows)


def _ratios(ratios: list[dict[str, Any]]) -> list[str]:
    header = ["stage", "batch", "compiled", "vs", "model FLOP/s", "samples/s", "images/s"]
    rows = [
        [x["stage"], x["batch"], "yes" if x["compiled"] else "no", x["vs"],
         f"{x['flops_ratio']:.2f}", f"{x['samples_ratio']:.2f}", f"{x['images_ratio']:.2f}"]
        for x in ratios
    ]  # fmt: skip
    caption = (
        "CLEF's step over open_clip's on the same model and batch (model FLOP/s is the "
        "work done per second: a CLEF stage-1 sample is two images and an eighth of a text "
        "batch, open_clip's one image and one caption):"
    )
    return ["", caption, ""] + table_lines(header, rows)


def _largest_batches(found: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for k, v in found.items():
        probes = ", ".join(f"{b} {'ok' if ok else 'OOM'}" for b, ok in v["probes"])
        cap = f" (the search's cap, {v['cap']})" if v["capped"] else ""
        lines.append(f"- {k}: largest batch {v['batch']}{cap}; probes: {probes}")
    return lines


def _predict(predict: list[dict[str, Any]]) -> list[str]:
    header = ["batch", "frames/s", "ms/frame (median)", "TFLOP/s", "MFU", "peak GiB"]
    rows = [
        [p["batch"], _fmt(p["frames_per_s"], 0), f"{p['median_ms_per_frame']:.3f}",
         _fmt(p["tflops"]), f"{100 * p['mfu']:.1f}%", f"{p['peak_memory_gib']:.2f}"]
        for p in predict
    ]  # fmt: skip
    caption = "`clef predict`, scoring aligned 224-px crops (`Predictor.score_crops`):"
    return ["", caption, ""] + table_lines(header, rows)


def _flops(fl: dict[str, Any]) -> list[str]:
    return [
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


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def target_lines(r: dict[str, Any]) -> list[str]:
    """Each target (TARGETS) against the best figure measured for it."""
    t = r["targets"]
    out = []
    s1 = [m for m in r["measurements"] if m["stage"] == 1 and m["step"] == "clef"]
    if s1:
        best = max(s1, key=lambda m: m["mfu"])
        compiled = ", compiled" if best["compiled"] else ""
        out.append(f"stage 1 MFU >= {100 * t['stage1_mfu']:.0f}% on an H100/H200: best "
                   f"{100 * best['mfu']:.1f}% (batch {best['batch']}{compiled}) "
                   f"{_met(best['mfu'] >= t['stage1_mfu'])}")  # fmt: skip
    for vs in ("open_clip amp fp16", "open_clip"):
        rs = [x for x in r["ratios"] if x["stage"] == 1 and x["vs"] == vs]
        if rs:
            x = max(rs, key=lambda x: x["flops_ratio"])
            goal = t["stage1_vs_open_clip"]
            out.append(f"stage 1 >= {goal}x {vs}'s step (model FLOP/s): best "
                       f"{x['flops_ratio']:.2f}x (batch {x['batch']}; samples/s "
                       f"{x['samples_ratio']:.2f}x) {_met(x['flops_ratio'] >= goal)}")  # fmt: skip
    if r["predict"]:
        best_p = max(p["frames_per_s"] for p in r["predict"])
        goal = t["predict_frames_per_s"]
        out.append(f"predict >= {goal:,.0f} frames/s: {best_p:,.0f} {_met(best_p >= goal)}")
    return out
