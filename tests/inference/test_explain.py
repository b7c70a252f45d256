"""Relevancy maps (`clef_core.inference.explain`, `clef explain`): GAE on a tiny open_clip ViT and
on the text tower equals a reference written out by hand (per layer, per head, the attention
computed head by head); capturing attention leaves the towers' outputs unchanged; Grad-CAM on
a tiny ResNet tower equals its definition computed on a forward written out by hand, and its
ReLU splits the map between a prompt and its opposite; the CLI on two real photographs
(scikit-image's astronaut, matplotlib's Grace Hopper) writes a PNG and JSON per face, and a
missing file, a faceless image and a non-checkpoint each get one line and exit 1 / 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clef_core.inference.explain import (
    captured_attention,
    gae_relevance,
    grad_cam,
    image_relevance,
    text_relevance,
)
from clef_core.method.checkpoint import save_checkpoint
from clef_core.method.config import load_config
from clef_core.method.labels import LabelSpace
from clef_core.method.model import ClefModel, build_model, tokenizer_for
from tests.real_faces import faceless, portrait

TINY_VIT = ["model.arch=inline", "model.input_norm=clip", "model.inline.image_size=32",
            "model.inline.patch_size=8", "model.inline.vision_layers=2",
            "model.inline.vision_width=32", "model.inline.vision_head_width=16"]  # fmt: skip


def _model(overrides: list[str], seed: int = 0) -> ClefModel:
    torch.manual_seed(seed)
    return build_model(load_config("cpu-tiny", overrides).model).eval()


def _block_by_hand(
    blk: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, probs: list[torch.Tensor]
) -> torch.Tensor:
    """One ResidualAttentionBlock, its attention head by head; appends each head's [B, T, T]."""
    y = blk.ln_1(x)  # [B, T, D]
    w, b = blk.attn.in_proj_weight, blk.attn.in_proj_bias
    d, h = x.shape[-1], blk.attn.num_heads
    dh = d // h
    outs = []
    for i in range(h):
        q, k, v = (y @ w[j * d + i * dh : j * d + (i + 1) * dh].T
                   + b[j * d + i * dh : j * d + (i + 1) * dh] for j in range(3))  # fmt: skip
        logits = q @ k.transpose(-1, -2) / dh**0.5  # [B, T, T]
        a = torch.softmax(logits if mask is None else logits + mask, -1)
        probs.append(a)
        outs.append(a @ v)
    x = x + blk.ls_1(blk.attn.out_proj(torch.cat(outs, -1)))
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def _gae_by_hand(
    probs: list[torch.Tensor], grads: tuple[torch.Tensor, ...], heads: int
) -> torch.Tensor:
    """R = I; per layer R += (1/H) sum_h max(dA_h * A_h, 0) @ R (batch row 0): [T, T]."""
    t = probs[0].shape[-1]
    r = torch.eye(t)
    for layer in range(len(probs) // heads):
        cam = torch.zeros(t, t)
        for i in range(heads):
            k = layer * heads + i
            cam += torch.clamp(grads[k][0] * probs[k][0], min=0) / heads
        r = r + cam @ r
    return r


def test_gae_image_tower_matches_hand_written_reference() -> None:
    model = _model(TINY_VIT)
    visual = model.clip.visual
    x = torch.randn(1, 3, 32, 32)
    text = F.normalize(torch.randn(1, model.embed_dim), dim=-1)
    probs: list[torch.Tensor] = []
    h = visual._embeds(x)  # [1, 17, 32]: CLS + a 4x4 grid of patches
    for blk in visual.transformer.resblocks:
        h = _block_by_hand(blk, h, None, probs)
    pooled, _ = visual._pool(h)
    score = (F.normalize(pooled @ visual.proj, dim=-1) * text).sum()
    assert torch.allclose(score, (model.encode_image(x) * text).sum(), atol=1e-5)
    grads = torch.autograd.grad(score, probs)
    heads = visual.transformer.resblocks[0].attn.num_heads
    assert heads == 2 and len(probs) == 4
    ref = _gae_by_hand(probs, grads, heads)  # [17, 17]

    with captured_attention(visual.transformer.resblocks) as maps:
        (model.encode_image(x) * text).sum().backward()
    assert torch.allclose(gae_relevance(maps)[0], ref, atol=1e-6)
    # image_relevance: the CLS row over the patches, on the 4x4 grid, upsampled, max 1
    _, heat = image_relevance(model, x, text)
    grid = ref[0, 1:].reshape(1, 1, 4, 4)
    want = F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(heat[0], want / want.max(), atol=1e-4)
    patches = ref[0, 1:]  # not flat: the comparison means something
    assert patches.std() > 0.2 * patches.mean() > 0


def test_gae_text_tower_matches_hand_written_reference() -> None:
    model = _model(TINY_VIT, seed=1)
    clip = model.clip
    ids = tokenizer_for(model.config)(["a photo of a person with lip corner puller."])
    image = F.normalize(torch.randn(model.embed_dim), dim=-1)
    probs: list[torch.Tensor] = []
    h = clip.token_embedding(ids) + clip.positional_embedding  # [1, L, D]
    for blk in clip.transformer.resblocks:
        h = _block_by_hand(blk, h, clip.attn_mask, probs)
    eot = int(ids.argmax())
    score = (F.normalize(clip.ln_final(h)[0, eot] @ clip.text_projection, dim=-1) * image).sum()
    grads = torch.autograd.grad(score, probs)
    ref = _gae_by_hand(probs, grads, clip.transformer.resblocks[0].attn.num_heads)
    cos, rows = text_relevance(model, ids, image)
    assert abs(float(cos[0]) - float(score.detach())) < 1e-5
    want = ref[eot, 1:eot].clamp(min=0)
    assert len(rows[0]) == eot - 1 == 11  # 9 words ("puller": 2 pieces) and the full stop
    assert torch.allclose(rows[0], want / want.max(), atol=1e-5)


def test_attention_capture_leaves_outputs_unchanged() -> None:
    model = _model(TINY_VIT, seed=2)
    x = torch.randn(3, 3, 32, 32)
    ids = tokenizer_for(model.config)(["a face", "the lips are pressed together firmly."])
    with torch.no_grad():
        before = model.encode_image(x), model.encode_text(ids)
        blocks = [*model.clip.visual.transformer.resblocks, *model.clip.transformer.resblocks]
        with captured_attention(blocks) as maps:
            during = model.encode_image(x), model.encode_text(ids)
        after = model.encode_image(x), model.encode_text(ids)
    assert len(maps) == 4 and maps[0].shape == (3, 2, 17, 17)
    for b, d, a in zip(before, during, after, strict=True):
        assert torch.allclose(b, d, atol=1e-5) and torch.equal(b, a)
    assert all("attention" not in vars(blk) for blk in blocks)  # the class's method again


def _resnet_cam_by_hand(model: ClefModel, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's definition on the ResNet tower run stage by stage: [h, w] on layer4's grid."""
    from clef_core.method.model import per_image_gray

    v = model.clip.visual
    a = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(per_image_gray(x))))))  # [1, C, 3, 3]
    score = (F.normalize(v.attnpool(a), dim=-1) * text).sum()
    (g,) = torch.autograd.grad(score, a)
    cam = sum(g[0, c].mean() * a[0, c] for c in range(a.shape[1]))
    return torch.relu(cam).detach()  # type: ignore[union-attr]


def test_grad_cam_matches_definition_and_its_relu_splits_opposite_prompts() -> None:
    model = _model([], seed=3)  # cpu-tiny itself: a ModifiedResNet on 96-px grey input
    x = torch.randn(1, 3, 96, 96)
    text = F.normalize(torch.randn(1, model.embed_dim), dim=-1)
    layer4 = model.clip.visual.layer4
    score, cam = grad_cam(model, x, text, layer4)
    ref = _resnet_cam_by_hand(model, x, text)
    want = F.interpolate(ref[None, None], size=(96, 96), mode="bilinear", align_corners=False)
    assert torch.allclose(cam[0], want[0, 0] / want.max(), atol=1e-4)
    # The opposite prompt (-t) flips every gradient: where one map is positive on the 3x3 grid
    # the other is zero, and both are non-zero somewhere (an abs() or a missing ReLU fails).
    neg = _resnet_cam_by_hand(model, x, -text)
    assert ref.max() > 0 and neg.max() > 0 and float((ref * neg).abs().max()) == 0.0
    _, cam_neg = grad_cam(model, x, -text, layer4)
    assert float((cam * cam_neg).sum()) < 0.25 * float((cam * cam).sum())
    with torch.no_grad():
        assert abs(float(score[0]) - float((model.encode_image(x) * text).sum())) < 1e-5


# --- the CLI on real photographs ------------------------------------------------------------

CLEF = [str(Path(sys.executable).with_name("clef"))]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two portraits and a checkpoint: cpu-tiny with BP4D's 12 AUs, untrained (seeded):
    the CLI's mechanics are under test here; what a trained model shows is in docs/measurements.md."""
    root = tmp_path_factory.mktemp("explain")
    paths = {}
    for name in ("astronaut", "grace_hopper"):
        paths[name] = root / f"{name}.png"
        cv2.imwrite(str(paths[name]), portrait(name).image)
    paths["cat"] = root / "cat.png"
    cv2.imwrite(str(paths["cat"]), next(p for p in faceless() if p.name == "chelsea").image)
    cfg = load_config("cpu-tiny")
    aus = LabelSpace("au", (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24))
    paths["model"] = save_checkpoint(root / "ckpt", _model([], seed=4), cfg, 2, 0, 0, aus)
    return paths


def _clef(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run([*CLEF, *args], capture_output=True, text=True, env=env, timeout=180)


def test_cli_explains_two_real_photographs(photos: dict[str, Path], tmp_path: Path) -> None:
    out = _clef("explain", str(photos["astronaut"]), str(photos["grace_hopper"]),
                "--model", str(photos["model"]), "--out", str(tmp_path), "--labels", "a smile")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("astronaut", "grace_hopper"):
        png = cv2.imread(str(tmp_path / f"{name}.png"))
        assert png is not None and png.shape[0] > 500 and png.shape[1] > 1000
        record = json.loads((tmp_path / f"{name}.json").read_text())
        prompts = record["prompts"]
        assert len(prompts) == 2 * 12 + 1 and prompts[-1]["kind"] == "free"
        au12 = next(p for p in prompts if p["label"] == "AU12" and p["kind"] == "name")
        assert au12["prompt"] == "a photo of a person with lip corner puller."
        words = "".join(t["token"] for t in au12["tokens"])
        assert words == "a photo of a person with lip corner puller . "
        assert 0 <= au12["probability"] <= 1 and -1 <= au12["cosine"] <= 1
        assert max(t["relevance"] for t in au12["tokens"]) == pytest.approx(1.0)
        # the aligned crop: eyes on the template's level, the mouth box below them
        eyes_y = np.array(record["face"]["points_crop"])[:2, 1]
        assert abs(eyes_y[0] - eyes_y[1]) < 3 and record["mouth_box_crop"][1] > eyes_y.max()
        assert 0 < au12["mouth_area_share"] < 0.2


def test_cli_bad_inputs_are_one_line_each(photos: dict[str, Path], tmp_path: Path) -> None:
    out = _clef("explain", str(photos["cat"]), str(tmp_path / "missing.jpg"),
                str(photos["astronaut"]), "--model", str(photos["model"]), "--out", str(tmp_path))  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "no face found" in out.stdout and "no such file" in out.stdout
    assert (tmp_path / "astronaut.png").is_file() and not (tmp_path / "cat.png").exists()
    assert "Traceback" not in out.stdout + out.stderr
    bad = _clef(
        "explain", str(photos["astronaut"]), "--model", str(tmp_path), "--out", str(tmp_path)
    )
    assert bad.returncode == 2, bad.stdout + bad.stderr
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a CLEF checkpoint" in lines[0], bad.stderr
