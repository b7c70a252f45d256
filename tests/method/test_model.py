"""Model building, initial-weight loading (FaRL/OpenAI layout), checkpoints, augmentations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clef_core.common.errors import ClefError
from clef_core.method.augment import augment, resize
from clef_core.method.checkpoint import load_model, save_checkpoint
from clef_core.method.config import AugmentConfig, load_config
from clef_core.method.labels import LabelSpace
from clef_core.method.model import build_clip, build_model, load_initial_weights, tokenizer_for


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    return load_config("cpu-tiny")


def test_tiny_model_encodes_images_and_text(tiny) -> None:  # type: ignore[no-untyped-def]
    model = build_model(tiny.model)
    tok = tokenizer_for(tiny.model)
    z_img = model.encode_image(torch.randn(3, 3, model.image_size, model.image_size))
    z_txt = model.encode_text(tok(["a photo of a person with lip corner puller.", "x"]))
    assert z_img.shape == (3, 64) and z_txt.shape == (2, 64)
    assert torch.allclose(z_img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert float(model.logit_scale().detach()) == pytest.approx(1 / 0.07, rel=1e-4)


def test_paper_architecture_uses_quickgelu() -> None:
    clip = build_clip(load_config("paper").model)
    assert clip.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"
    assert sum(p.numel() for p in clip.parameters()) > 140e6


def test_initial_weights_load_farl_layout(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = build_clip(tiny.model)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["mim_decoder.weight"] = torch.zeros(3)  # FaRL's extra masked-image-modelling keys
    torch.save({"state_dict": state}, tmp_path / "farl.pth")
    target = build_clip(tiny.model)
    report = load_initial_weights(target, tmp_path / "farl.pth")
    assert report.dropped == ["mim_decoder.weight"] and report.loaded == len(source.state_dict())
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v)


def test_initial_weights_fail_loudly_on_missing_keys(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    state = build_clip(tiny.model).state_dict()
    del state["visual.conv1.weight"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(ClefError, match=r"lacks 1 of the model's"):
        load_initial_weights(build_clip(tiny.model), tmp_path / "partial.pt")
    with pytest.raises(ClefError, match="not found"):
        load_initial_weights(build_clip(tiny.model), tmp_path / "nope.pt")


def test_torchscript_weights_are_refused_with_how_to_convert(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """OpenAI's CLIP files are TorchScript archives: loading one runs its code, so there is no
    torch.jit.load fallback; the message gives the one-line conversion to a state dict."""
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ViT-B-16.pt")
    with pytest.raises(ClefError, match=r"TorchScript archive.*torch\.jit\.load.*\.state\.pt"):
        load_initial_weights(build_clip(tiny.model), tmp_path / "ViT-B-16.pt")


def test_checkpoint_round_trip_with_meta(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = build_model(tiny.model)
    model.set_linear_head(3)
    space = LabelSpace.aus([1, 2, 4])
    save_checkpoint(tmp_path / "ckpt", model, tiny, stage=2, step=7, epoch=1, space=space)
    loaded, meta = load_model(tmp_path / "ckpt")
    assert meta["step"] == 7 and meta["labels"] == [1, 2, 4] and meta["head"] == "linear"
    x = torch.randn(2, 3, model.image_size, model.image_size)
    model.eval()
    loaded.eval()
    assert torch.allclose(model.head(model.encode_image(x)), loaded.head(loaded.encode_image(x)))  # type: ignore[misc]
    with pytest.raises(ClefError, match="not a CLEF checkpoint"):
        load_model(tmp_path)


def test_augment_shapes_determinism_and_identity() -> None:
    images = np.random.default_rng(0).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    cfg = AugmentConfig()
    a = augment(images, 64, cfg, torch.Generator().manual_seed(0))
    b = augment(images, 64, cfg, torch.Generator().manual_seed(0))
    c = augment(images, 64, cfg, torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)
    # With no crop, flip or rotation the warp is a plain resize.
    still = AugmentConfig(crop_scale=(1.0, 1.0), flip_p=0.0, rotation_deg=0.0)
    plain = augment(images, 96, still, torch.Generator().manual_seed(0))
    assert torch.allclose(plain, resize(images, 96), atol=1e-4)
    flipped = augment(
        images,
        96,
        AugmentConfig(crop_scale=(1.0, 1.0), flip_p=1.0, rotation_deg=0.0),
        torch.Generator().manual_seed(0),
    )
    assert torch.allclose(flipped, resize(images, 96).flip(-1), atol=1e-4)
    # Shrinking (224-px shards into a 64-px model) antialiases like evaluation's resize does.
    large = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    shrunk = augment(large, 64, still, torch.Generator().manual_seed(0))
    assert torch.allclose(shrunk, resize(large, 64), atol=1e-4)
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.0, 1.0))


def test_inline_towers_build_and_round_trip(tmp_path: Path) -> None:
    """vision_layers as 4 block counts (cpu-tiny): open_clip's ModifiedResNet; as one depth: a
    ViT. Both saved and reloaded."""
    cfg = load_config("cpu-tiny")
    vit_set = ["model.inline.vision_layers=4", "model.inline.vision_width=128"]
    vit = build_model(load_config("cpu-tiny", vit_set).model)
    assert type(vit.clip.visual).__name__ == "VisionTransformer"
    model = build_model(cfg.model)
    assert type(model.clip.visual).__name__ == "ModifiedResNet" and model.image_size == 96
    save_checkpoint(tmp_path / "ckpt", model, cfg, stage=1, step=1, epoch=0)
    loaded, _ = load_model(tmp_path / "ckpt")
    x = torch.randn(2, 3, model.image_size, model.image_size)
    model.eval()
    loaded.eval()
    assert torch.allclose(model.encode_image(x), loaded.encode_image(x))
    with pytest.raises(ClefError, match="multiple of 32"):
        load_config(
            "cpu-tiny", ["model.inline.vision_layers=[1,1,1,1]", "model.inline.image_size=48"]
        )


@pytest.mark.parametrize("norm", ["clip", "per_image_gray"])
def test_per_image_gray_input_ignores_brightness_and_contrast(norm: str) -> None:
    """input_norm=per_image_gray: an image and a darker, flatter copy encode alike (skin tone
    and lighting are identity cues a small model would learn); CLIP's input does not."""
    cfg = load_config("cpu-tiny", [f"model.input_norm={norm}"])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    x = torch.randn(2, 3, model.image_size, model.image_size)
    with torch.no_grad():
        same = torch.allclose(model.encode_image(x), model.encode_image(0.4 * x - 0.7), atol=1e-5)
    assert same == (norm == "per_image_gray")
