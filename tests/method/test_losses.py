"""Each loss of the paper (Eq. 1-6) against an independent, loop-based plain reference."""

from __future__ import annotations

import math

import pytest
import torch

from clef_core.method import losses


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def ref_supcon(z_a: torch.Tensor, z_b: torch.Tensor, labels: list[int], eps: float) -> float:
    """Eq. 1 written out: loops over anchors, positives and the denominator."""
    z_a, z_b = unit(z_a.double()), unit(z_b.double())
    contrast = list(z_a) + list(z_b)
    lab = labels + labels
    n = len(labels)
    total = 0.0
    for i in range(n):
        denominator = sum(
            math.exp(float(z_a[i] @ contrast[k]) / eps) for k in range(2 * n) if k != i
        )
        positives = [p for p in range(2 * n) if p != i and lab[p] == labels[i]]
        li = 0.0
        for p in positives:
            li += math.log(math.exp(float(z_a[i] @ contrast[p]) / eps) / denominator)
        total += -li / len(positives)
    return total / n


@pytest.mark.parametrize("labels", [[0, 1, 0, 2, 1, 3], [5, 5, 5, 5], [0, 1, 2, 3, 4, 5, 6, 7]])
def test_cross_modal_supcon_matches_reference(labels: list[int]) -> None:
    g = torch.Generator().manual_seed(len(labels))
    z_a, z_b = torch.randn(len(labels), 8, generator=g), torch.randn(len(labels), 8, generator=g)
    got = losses.cross_modal_supcon(z_a, z_b, torch.tensor(labels), 0.25)
    assert got.ndim == 0
    assert float(got) == pytest.approx(ref_supcon(z_a, z_b, labels, 0.25), rel=1e-5)


def test_supcon_temperature_and_normalisation() -> None:
    g = torch.Generator().manual_seed(0)
    z_a, z_b, labels = (
        torch.randn(5, 4, generator=g),
        torch.randn(5, 4, generator=g),
        [0, 0, 1, 2, 1],
    )
    # Scaling features changes nothing (they are normalised inside); temperature does.
    a = losses.cross_modal_supcon(3 * z_a, 0.5 * z_b, torch.tensor(labels), 0.1)
    assert float(a) == pytest.approx(ref_supcon(z_a, z_b, labels, 0.1), rel=1e-5)


def test_pretrain_loss_is_the_sum_of_both_terms() -> None:
    g = torch.Generator().manual_seed(1)
    z, z2, za = (torch.randn(6, 8, generator=g) for _ in range(3))
    labels = [0, 1, 1, 0, 2, 2]
    expected = ref_supcon(z, z2, labels, 0.25) + ref_supcon(z, za, labels, 0.25)
    got = losses.pretrain_loss(z, z2, za, torch.tensor(labels))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    only_ii = losses.pretrain_loss(z, z2, za, torch.tensor(labels), weight_ia=0.0)
    assert float(only_ii) == pytest.approx(ref_supcon(z, z2, labels, 0.25), rel=1e-5)


def test_name_description_loss_matches_reference() -> None:
    g = torch.Generator().manual_seed(2)
    zd, zn, scale = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g), 14.0
    d, n = unit(zd.double()), unit(zn.double())
    expected = 0.0
    for i in range(5):
        row = [scale * float(d[i] @ n[j]) for j in range(5)]
        expected += -(row[i] - math.log(sum(math.exp(v) for v in row)))
    assert float(losses.name_description_loss(zd, zn, scale)) == pytest.approx(
        expected / 5, rel=1e-5
    )


def test_expression_loss_divides_by_batch_not_weight_sum() -> None:
    g = torch.Generator().manual_seed(3)
    zi, zn = torch.randn(6, 8, generator=g), torch.randn(4, 8, generator=g)
    targets, w, scale = [0, 3, 3, 1, 2, 3], [0.5, 2.0, 1.5, 0.25], 10.0
    i, n = unit(zi.double()), unit(zn.double())
    expected = 0.0
    for b, y in enumerate(targets):
        s = [scale * float(i[b] @ n[c]) for c in range(4)]
        expected += -w[y] * (s[y] - math.log(sum(math.exp(v) for v in s)))
    got = losses.expression_loss(zi, zn, torch.tensor(targets), scale, torch.tensor(w))
    assert float(got) == pytest.approx(expected / len(targets), rel=1e-5)
    weighted_mean = torch.nn.functional.cross_entropy(
        scale * unit(zi) @ unit(zn).T, torch.tensor(targets), weight=torch.tensor(w)
    )
    assert float(got) != pytest.approx(float(weighted_mean), rel=1e-3)


def test_au_loss_masks_unknown_and_weights_positives() -> None:
    g = torch.Generator().manual_seed(4)
    zi, zn = torch.randn(4, 8, generator=g), torch.randn(3, 8, generator=g)
    targets = [[1, 0, -1], [0, -1, 1], [1, 1, 0], [-1, -1, -1]]  # a fully unknown row too
    w, scale = [2.0, 0.5, 3.0], 7.0
    i, n = unit(zi.double()), unit(zn.double())
    expected = 0.0
    for b in range(4):
        for c in range(3):
            y = targets[b][c]
            if y < 0:
                continue
            p = 1 / (1 + math.exp(-scale * float(i[b] @ n[c])))
            expected += -(w[c] * y * math.log(p) + (1 - y) * math.log(1 - p))
    got = losses.au_loss(zi, zn, torch.tensor(targets), scale, torch.tensor(w))
    assert float(got) == pytest.approx(expected / 4, rel=1e-5)


def test_au_loss_is_stable_for_large_logits() -> None:
    logits = torch.tensor([[80.0, -80.0]])
    got = losses.au_loss_from_logits(logits, torch.tensor([[0, 1]]))
    assert math.isfinite(float(got)) and float(got) == pytest.approx(160.0, rel=1e-4)


def test_finetune_loss() -> None:
    assert float(losses.finetune_loss(torch.tensor(3.0), torch.tensor(1.0))) == pytest.approx(
        (2 * 3 + 1) / 2
    )
    assert float(losses.finetune_loss(torch.tensor(3.0), 0.0, lam=1.0)) == pytest.approx(1.5)


def test_gradients_flow_through_supcon() -> None:
    z_a = torch.randn(4, 8, requires_grad=True)
    z_b = torch.randn(4, 8, requires_grad=True)
    losses.cross_modal_supcon(z_a, z_b, torch.tensor([0, 1, 0, 1])).backward()
    assert z_a.grad is not None and z_b.grad is not None and z_b.grad.abs().sum() > 0


def ref_instance_pairing(z1: torch.Tensor, z2: torch.Tensor, eps: float) -> float:
    """SimCLR's pairing (the paper's Figure 1a) written out: anchor i of view 1, its only
    positive the same image's view 2, the denominator every other feature of both views."""
    z1, z2 = unit(z1.double()), unit(z2.double())
    contrast = list(z1) + list(z2)
    n = len(z1)
    total = 0.0
    for i in range(n):
        denominator = sum(
            math.exp(float(z1[i] @ contrast[k]) / eps) for k in range(2 * n) if k != i
        )
        total += -math.log(math.exp(float(z1[i] @ z2[i]) / eps) / denominator)
    return total / n


def test_stage1_step_with_instance_pairing_is_simclr_pairing() -> None:
    """The step training calls (`pretrain_step`), with stage1.pairing=instance: positives are
    the other view of the same image only, whatever the activities; activity pairing on the
    same batch (activities repeat) gives a different loss."""
    import random

    from clef_core.method.config import load_config
    from clef_core.method.model import build_model, tokenizer_for
    from clef_core.method.steps import pretrain_step

    g = torch.Generator().manual_seed(3)
    batch = {
        "view1": torch.randn(6, 3, 96, 96, generator=g),
        "view2": torch.randn(6, 3, 96, 96, generator=g),
        "activity": torch.tensor([0, 1, 0, 1, 2, 2]),
    }
    got = {}
    for pairing in ("instance", "activity"):
        # A LayerNorm ViT tower on RGB input: a fresh ResNet's grey features are all but
        # identical, and with equal similarities every pairing gives the same loss.
        vit = ["model.inline.vision_layers=2", "model.inline.vision_width=64"]
        rgb = ["model.input_norm=clip", "model.inline.image_size=96"]
        pair = [f"stage1.pairing={pairing}", "stage1.weight_image_activity=0"]
        cfg = load_config("cpu-tiny", [*vit, *rgb, *pair])
        torch.manual_seed(0)
        model = build_model(cfg.model)
        loss, _ = pretrain_step(
            model, batch, tokenizer_for(cfg.model), [("bp4d", "T1")] * 3, cfg.stage1,
            random.Random(0),
        )  # fmt: skip
        got[pairing] = float(loss.detach())
        with torch.no_grad():
            z1, z2 = model.encode_image(batch["view1"]), model.encode_image(batch["view2"])
    assert got["instance"] == pytest.approx(ref_instance_pairing(z1, z2, 0.25), rel=1e-5)
    assert abs(got["instance"] - got["activity"]) > 1e-3


def test_instance_pairing_refuses_activity_text() -> None:
    from clef_core.common.errors import ConfigError
    from clef_core.method.config import load_config

    with pytest.raises(ConfigError, match="weight_image_activity=0"):
        load_config("cpu-tiny", ["stage1.pairing=instance"])
