"""Relevancy maps (the paper's Figure 4): where the image tower looks and which words the text
tower weighs, for the similarity of one face to one prompt.

Target: the cosine similarity of the image feature and the prompt's text feature (the
logit before CLEF's 1/tau), both from `ClefModel.encode_image` / `encode_text`, so the
model's own input normalisation (cpu-tiny's per-image grey) is part of what is explained.

- Transformer towers (a ViT image tower, every text tower): generic attention explainability
  (GAE; Chefer et al., ICCV 2021, the paper's [5]): R = I, and per layer
  R += mean_heads(clamp(dA * A, min=0)) @ R; the relevance of the tokens is R's row of the
  output token (a ViT's CLS: its patch columns on the patch grid; text: the EOT token).
- open_clip's ModifiedResNet image tower (cpu-tiny): Grad-CAM (Selvaraju et al., ICCV 2017)
  on a convolutional stage.

All prompts of one face are explained in one batch: the face repeated once per prompt, and
the sum of the per-prompt scores back-propagated once. In eval mode (BatchNorm frozen) the
rows do not interact, so each row's gradient is that of its own score.

Plain torch: no Ray, MLflow or Prefect.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clef_core.common.errors import ClefError
from clef_core.method.labels import LabelSpace
from clef_core.method.model import ClefModel, tokenizer_for
from clef_core.method.text import description_prompts, name_prompts


@dataclass(frozen=True)
class Prompt:
    label: str  # the class column (AU12, happy) or the free text itself
    kind: str  # "name", "description" or "free"
    text: str


@dataclass
class Explanation:
    prompt: Prompt
    score: float  # cosine similarity of the face and the prompt
    probability: float | None  # the class's probability from the model's head (names only)
    heatmap: np.ndarray  # [S, S] relevance on the model input, >= 0, max 1 (0s: none)
    tokens: list[tuple[str, float]] = field(default_factory=list)  # word piece, relevance 0-1


class _First(random.Random):
    """Picks the first option: a fixed description prompt per class (template "{}." and each
    class's first description; ours, training draws them at random)."""

    def choice(self, seq):  # type: ignore[no-untyped-def,override]
        return seq[0]


def class_prompts(space: LabelSpace | None, free: Sequence[str] = ()) -> list[Prompt]:
    """Per class its name prompt and its description prompt, then one prompt per free text
    (a stage-1 model, `space` None, has free text only)."""
    if space is None:
        if not free:
            raise ClefError("a stage-1 model has no classes: give the text to explain (--labels)")
        return [Prompt(t, "free", name_prompts([t])[0]) for t in free]
    names = name_prompts(space.labels)
    descriptions = description_prompts(space.labels, _First())
    out: list[Prompt] = []
    for label, name, description in zip(space.labels, names, descriptions, strict=True):
        column = f"AU{label:02d}" if space.kind == "au" else str(label)
        out += [Prompt(column, "name", name), Prompt(column, "description", description)]
    return out + [Prompt(t, "free", name_prompts([t])[0]) for t in free]


# --- attention capture (transformer towers) -------------------------------------------------


def attention_with_probabilities(
    attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.MultiheadAttention's self-attention written out, so that its probabilities are a
    tensor on the output's path (the weights MHA returns are a copy its output does not use,
    so they get no gradient). x [B, T, D] (batch first) -> (output [B, T, D], probs [B, H, T, T])."""
    if not (attn.batch_first and attn._qkv_same_embed_dim) or attn.bias_k is not None:
        raise ClefError("attention explainability expects open_clip's batch-first self-attention")
    b, t, d = x.shape
    h = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [B, T, 3D]
    q, k, v = (p.reshape(b, t, h, d // h).transpose(1, 2) for p in qkv.chunk(3, -1))  # [B,H,T,d/H]
    logits = q @ k.transpose(-2, -1) / math.sqrt(d // h)  # [B, H, T, T]
    if mask is not None:  # open_clip's causal text mask: additive, -inf above the diagonal
        logits = (
            logits.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
        )
    probs = logits.softmax(-1)  # [B, H, T, T]
    out = (probs @ v).transpose(1, 2).reshape(b, t, d)  # [B, T, D]
    return attn.out_proj(out), probs


@contextmanager
def captured_attention(blocks: Sequence[nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Within the block, each ResidualAttentionBlock's attention runs written out and appends
    its probabilities [B, H, T, T] (gradients retained) to the yielded list, in layer order.
    The blocks' outputs are unchanged (tests/inference/test_explain.py)."""
    maps: list[torch.Tensor] = []
    for block in blocks:
        if not isinstance(getattr(block, "attn", None), nn.MultiheadAttention):
            raise ClefError(f"cannot explain {type(block).__name__}: no nn.MultiheadAttention")

        def attention(q_x: torch.Tensor, k_x: torch.Tensor | None = None,
                      v_x: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                      _block: nn.Module = block) -> torch.Tensor:  # fmt: skip
            if k_x is not None or v_x is not None:
                raise ClefError("attention explainability covers self-attention only")
            mask = attn_mask.to(q_x.dtype) if attn_mask is not None else None
            out, probs = attention_with_probabilities(_block.attn, q_x, mask)  # type: ignore[arg-type]
            if probs.requires_grad:
                probs.retain_grad()
            maps.append(probs)
            return out

        block.attention = attention  # an instance attribute: shadows the class's method
    try:
        yield maps
    finally:
        for block in blocks:
            del block.attention  # the class's own method again


def gae_relevance(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s rule over captured attention maps (their .grad filled by a backward pass):
    [B, H, T, T] per layer -> R [B, T, T]; R[b, i] is how much each token feeds token i."""
    first = maps[0]
    b, _, t, _ = first.shape
    r = torch.eye(t, dtype=first.dtype, device=first.device).expand(b, t, t).clone()  # [B, T, T]
    for a in maps:
        if a.grad is None:
            raise ClefError("attention map without a gradient: run the backward pass first")
        cam = (a.grad * a).clamp(min=0).mean(1)  # [B, T, T], heads averaged
        r = r + cam @ r
    return r.detach()


# --- the two towers ---------------------------------------------------------------------------


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """[B, ...] non-negative -> each map divided by its max (ours: display scale; 0s stay 0)."""
    peak = maps.flatten(1).amax(1).clamp(min=1e-12)  # [B]
    return maps / peak.view(-1, *([1] * (maps.dim() - 1)))


def image_relevance(
    model: ClefModel, images: torch.Tensor, text: torch.Tensor, layer: str = "layer4"
) -> tuple[torch.Tensor, torch.Tensor]:
    """images [P, 3, S, S] (model input, one row per prompt), text [P, d] unit features (fixed)
    -> (cosine [P], relevance [P, S, S] in [0, 1]). GAE for a ViT tower, Grad-CAM on
    `layer` of a ModifiedResNet (ours: the last stage, `layer4`, by default)."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    visual = model.clip.visual
    s = images.shape[-1]
    if isinstance(visual, ModifiedResNet):
        return grad_cam(model, images, text, getattr(visual, layer))
    if not isinstance(visual, VisionTransformer):
        raise ClefError(f"no explainability for an image tower of type {type(visual).__name__}")
    with torch.enable_grad(), captured_attention(visual.transformer.resblocks) as maps:
        score = (model.encode_image(images) * text).sum(-1)  # [P]
        score.sum().backward()
    r = gae_relevance(maps)[:, 0, 1:]  # [P, N]: the CLS row over the patches (ours: CLS dropped)
    side = math.isqrt(r.shape[1])
    grid = r.reshape(-1, 1, side, side)  # [P, 1, g, g]
    up = F.interpolate(grid, size=(s, s), mode="bilinear", align_corners=False)[:, 0]  # [P,S,S]
    return score.detach(), _unit(up.clamp(min=0))


def grad_cam(
    model: ClefModel, images: torch.Tensor, text: torch.Tensor, stage: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM: ReLU(sum_c mean_ij(dy/dA_c) A_c) on `stage`'s output, upsampled bilinearly
    to the input (Selvaraju et al.; the ReLU keeps what raises the score, as theirs)."""
    acts: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        out.retain_grad()
        acts.append(out)

    handle = stage.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            score = (model.encode_image(images) * text).sum(-1)  # [P]
            score.sum().backward()
    finally:
        handle.remove()
    a = acts[0]  # [P, C, h, w]
    assert a.grad is not None
    weights = a.grad.mean((2, 3), keepdim=True)  # [P, C, 1, 1]
    cam = (weights * a).sum(1, keepdim=True).clamp(min=0).detach()  # [P, 1, h, w]
    s = images.shape[-1]
    up = F.interpolate(cam, size=(s, s), mode="bilinear", align_corners=False)[:, 0]  # [P,S,S]
    return score.detach(), _unit(up)


def text_relevance(
    model: ClefModel, tokens: torch.Tensor, image: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """tokens [P, L] (open_clip ids), image [d] unit feature (fixed) -> (cosine [P], per prompt
    the relevance of its tokens between SOT and EOT (ours: both dropped), max 1)."""
    blocks = model.clip.transformer.resblocks
    with torch.enable_grad(), captured_attention(blocks) as maps:
        score = (model.encode_text(tokens) * image).sum(-1)  # [P]
        score.sum().backward()
    r = gae_relevance(maps)  # [P, L, L]
    eot = tokens.argmax(-1)  # open_clip pools the EOT token: the highest id
    rows = [r[i, e, 1:e].clamp(min=0) for i, e in enumerate(eot.tolist())]  # [n_i] each
    return score.detach(), [row / row.max().clamp(min=1e-12) for row in rows]


def token_strings(tokenizer: object, ids: torch.Tensor) -> list[str]:
    """The word pieces between SOT and EOT, as text (a piece that ends a word ends in a space)."""
    decoder = tokenizer.decoder  # type: ignore[attr-defined]
    byte_decoder = tokenizer.byte_decoder  # type: ignore[attr-defined]
    eot = int(ids.argmax())
    out = []
    for i in ids[1:eot].tolist():
        piece = decoder[i]
        raw = bytearray(byte_decoder[c] for c in piece.removesuffix("</w>"))
        out.append(raw.decode("utf-8", errors="replace") + (" " if piece.endswith("</w>") else ""))
    return out


@torch.no_grad()
def _probabilities(model: ClefModel, space: LabelSpace, z: torch.Tensor) -> list[float]:
    """The classes' probabilities for one image feature z [d], as `clef predict` scores them."""
    from clef_core.method.steps import class_logits, tokens

    text = None
    if model.head is None:
        text = model.encode_text(tokens(tokenizer_for(model.config), name_prompts(space.labels),
                                        z.device))  # fmt: skip
    logits = class_logits(model, z[None], text)[0]  # [C]
    p = torch.sigmoid(logits) if space.kind == "au" else torch.softmax(logits, -1)
    return p.tolist()


def explain_crop(
    model: ClefModel, space: LabelSpace | None, crop: np.ndarray, prompts: Sequence[Prompt],
    layer: str = "layer4",
) -> list[Explanation]:  # fmt: skip
    """One aligned RGB face crop (uint8 [H, W, 3]) -> an explanation per prompt. The model must
    be in eval mode (its BatchNorm frozen: the batch rows must not interact)."""
    from clef_core.method.augment import resize

    if model.training:
        raise ClefError("explain_crop needs the model in eval mode (model.eval())")
    device = next(model.parameters()).device
    tok = tokenizer_for(model.config)
    ids = tok([p.text for p in prompts]).to(device)  # [P, L]
    x = resize(crop[None], model.image_size).to(device)  # [1, 3, S, S]
    with torch.no_grad():
        z = model.encode_image(x)[0]  # [d]
        t = model.encode_text(ids)  # [P, d]
    score, maps = image_relevance(model, x.expand(len(prompts), -1, -1, -1), t, layer)
    _, words = text_relevance(model, ids, z)
    model.zero_grad(set_to_none=True)  # the backward passes filled them; nothing trains
    probs = _probabilities(model, space, z) if space is not None else []
    columns = [p.label for p in prompts if p.kind == "name"]
    out = []
    for i, p in enumerate(prompts):
        prob = probs[columns.index(p.label)] if p.kind == "name" and probs else None
        pieces = token_strings(tok, ids[i].cpu())
        tokens_ = list(zip(pieces, words[i].tolist(), strict=True))
        out.append(Explanation(p, float(score[i]), prob, maps[i].cpu().numpy(), tokens_))
    return out


def region_share(
    heatmap: np.ndarray, box: tuple[float, float, float, float]
) -> tuple[float, float]:
    """(share of the map's mass inside box (x0, y0, x1, y1, in the map's pixels), the box's
    share of the area): mass share / area share > 1 means the map favours the box."""
    h, w = heatmap.shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1, y0, y1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
    total = float(heatmap.sum())
    inside = float(heatmap[y0:y1, x0:x1].sum())
    return (inside / total if total > 0 else 0.0), (x1 - x0) * (y1 - y0) / (h * w)


def mouth_box(points: np.ndarray, size: int) -> tuple[float, float, float, float]:
    """The mouth region on an aligned crop from its 5 landmarks in crop pixels [5, 2]
    (points 3, 4: the mouth corners): the corners' span grown by a third of the mouth's width
    on each side, and from 0.5 widths above to 0.6 below the corners (ours: it holds the lips
    and the lip corners' pull; the chin stays out)."""
    left, right = points[3], points[4]
    width = float(np.hypot(*(right - left)))
    cy = float(left[1] + right[1]) / 2
    x0, x1 = float(min(left[0], right[0])) - width / 3, float(max(left[0], right[0])) + width / 3
    return (max(x0, 0.0), max(cy - 0.5 * width, 0.0), min(x1, size), min(cy + 0.6 * width, size))
