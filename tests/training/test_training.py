"""Both CLEF stages train on CPU with the cpu-tiny model: losses fall, activities cluster,
the ablation head trains, and a fine-tuned model scores unseen classes from their names."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from clef_core.method.augment import augment, resize
from clef_core.method.config import load_config
from clef_core.method.labels import LabelSpace
from clef_core.method.model import build_model, tokenizer_for
from clef_core.method.steps import (
    finetune_step,
    make_optimizer,
    metrics_of,
    predict,
    pretrain_step,
    run_epoch,
    warmup_cosine,
)
from clef_core.method.weights import au_pos_weights, expression_weights
from synthetic.dynamics import AU_INDEX
from tests.faces import expression_faces

CPU = torch.device("cpu")
# The classes below are marked by a colour cast, so the models see the paper's RGB input here
# (cpu-tiny's grey per-image input removes colour by design; docs/measurements.md, "Training from scratch").
# The faces here are 64 px, so the model is too (cpu-tiny's 96 px would only cost time).
RGB = ["model.input_norm=clip", "model.inline.image_size=64"]
# Four BP4D activities, each shown here through its target emotion.
ACTIVITIES = [("bp4d", "T1"), ("bp4d", "T2"), ("bp4d", "T3"), ("bp4d", "T7")]
EMOTIONS = ["happiness", "sadness", "surprise", "anger"]


# A colour cast per activity (lighting differs between the recording set-ups of each task),
# so the activity is plainly visible in the pixels, beside the expression it elicits.
TINTS = np.array([[50, 0, 0], [0, 50, 0], [0, 0, 50], [50, 50, 0]])


def tinted(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.clip(images.astype(int) + TINTS[labels][:, None, None, :], 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """Faces whose class is plainly visible (expression + colour cast): these tests check that
    each objective learns what the pixels show within a few dozen steps. How well the tiny
    model learns the subtle expressions alone is measured by the full pipeline (issue 7)."""
    train_x, train_y, train_au = expression_faces(EMOTIONS, 48, seed=0)
    test_x, test_y, test_au = expression_faces(EMOTIONS, 16, seed=1)
    return {
        "train_x": tinted(train_x, train_y),
        "train_y": train_y,
        "train_au": train_au,
        "test_x": tinted(test_x, test_y),
        "test_y": test_y,
        "test_au": test_au,
    }


def batches(x: np.ndarray, y: dict[str, np.ndarray], size: int, epochs: int, seed: int, transform):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for s in range(0, len(order) - size + 1, size):
            idx = order[s : s + size]
            yield {**transform(x[idx]), **{k: torch.as_tensor(v[idx]) for k, v in y.items()}}


def similarity_gap(model, x: np.ndarray, y: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        z = model.encode_image(resize(x, 64))
    sim = (z @ z.T).numpy()
    same = y[:, None] == y[None, :]
    off = ~np.eye(len(y), dtype=bool)
    return float(sim[same & off].mean() - sim[~same].mean())


def test_stage1_pulls_same_activity_features_together(data: dict[str, np.ndarray]) -> None:
    torch.manual_seed(0)
    cfg = load_config("cpu-tiny", RGB)
    model, tok = build_model(cfg.model), tokenizer_for(cfg.model)
    gen = torch.Generator().manual_seed(0)
    train_x, test_x = data["train_x"], data["test_x"]
    before = similarity_gap(model, test_x, data["test_y"])

    def views(x: np.ndarray) -> dict[str, torch.Tensor]:  # two augmented views per image
        return {
            "view1": augment(x, 64, cfg.stage1.augment, gen),
            "view2": augment(x, 64, cfg.stage1.augment, gen),
        }

    opt = make_optimizer(model, 1e-3, 0.01)
    rng = random.Random(0)
    step, first = run_epoch(
        lambda b: pretrain_step(model, b, tok, ACTIVITIES, cfg.stage1, rng),
        batches(train_x, {"activity": data["train_y"]}, 32, 1, 0, views),
        opt,
        lambda s: 1e-3,
        0,
        CPU,
    )
    step, last = run_epoch(
        lambda b: pretrain_step(model, b, tok, ACTIVITIES, cfg.stage1, rng),
        batches(train_x, {"activity": data["train_y"]}, 32, 3, 1, views),
        opt,
        lambda s: warmup_cosine(s, 24, 0, 1e-3, 1e-5),
        step,
        CPU,
    )
    after = similarity_gap(model, test_x, data["test_y"])
    assert last["loss"] < first["loss"] and {"loss_ii", "loss_ia", "lr"} <= set(last)
    # Same-activity features end up far closer than different-activity ones, on held-out faces.
    assert after > 0.3 and after > before + 0.3, (before, after)


@pytest.mark.parametrize("head", ["names", "linear"])
def test_stage2_au_loss_goes_down_and_beats_chance(data: dict[str, np.ndarray], head: str) -> None:
    torch.manual_seed(0)
    cfg = load_config("cpu-tiny", [*RGB, f"stage2.head={head}"])
    model, tok = build_model(cfg.model), tokenizer_for(cfg.model)
    space = LabelSpace.aus([1, 2, 4, 6, 12, 15, 26])
    cols = [AU_INDEX[a] for a in space.labels]
    au_train = (data["train_au"][:, cols] >= 2).astype(np.int8)
    au_train[::9, 0] = -1  # some unknown labels, masked
    if head == "linear":
        model.set_linear_head(space.n)
    weights = torch.as_tensor(au_pos_weights(au_train))
    opt = make_optimizer(model, 1e-3, 0.01)
    rng = random.Random(0)
    losses = []
    run_epoch(
        lambda b: finetune_step(model, b, tok, space, cfg.stage2, weights, rng),
        batches(data["train_x"], {"au": au_train}, 32, 8, 0, lambda x: {"image": resize(x, 64)}),
        opt,
        lambda s: 1e-3,
        0,
        CPU,
        on_step=lambda s, p: losses.append(p["loss"]),
    )
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    test_au = (data["test_au"][:, cols] >= 2).astype(np.int8)
    pred = predict(
        model,
        [{"image": resize(data["test_x"], 64), "au": torch.as_tensor(test_au)}],
        tok,
        space,
        CPU,
    )
    f1 = metrics_of(pred, space)["f1_mean"]
    prevalence = test_au.mean(0)
    constant = np.mean(2 * prevalence / (1 + prevalence))
    assert f1 > constant + 0.1, (f1, constant)


def test_stage2_expressions_and_zero_shot(data: dict[str, np.ndarray]) -> None:
    torch.manual_seed(0)
    cfg = load_config("cpu-tiny", RGB)
    model, tok = build_model(cfg.model), tokenizer_for(cfg.model)
    seen = LabelSpace.expressions(EMOTIONS)
    weights = torch.as_tensor(expression_weights(data["train_y"], seen.n))
    opt = make_optimizer(model, 1e-3, 0.01)
    rng = random.Random(0)
    losses = []
    run_epoch(
        lambda b: finetune_step(model, b, tok, seen, cfg.stage2, weights, rng),
        batches(
            data["train_x"],
            {"expression": data["train_y"]},
            32,
            8,
            0,
            lambda x: {"image": resize(x, 64)},
        ),
        opt,
        lambda s: 1e-3,
        0,
        CPU,
        on_step=lambda s, p: losses.append(p["loss"]),
    )
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    test = [{"image": resize(data["test_x"], 64), "expression": torch.as_tensor(data["test_y"])}]
    acc = metrics_of(predict(model, test, tok, seen, CPU), seen)["accuracy"]
    assert acc > 0.5
    # Zero-shot: the same model scores classes it never saw, from their names alone.
    unseen = LabelSpace.expressions(["fear", "disgust", "contempt"])
    zs = predict(
        model,
        [{"image": resize(data["test_x"], 64), "expression": torch.full((64,), -1)}],
        tok,
        unseen,
        CPU,
    )
    assert zs.scores.shape == (64, 3) and np.allclose(zs.scores.sum(1), 1, atol=1e-5)
    au_space = LabelSpace.aus([6, 12])  # expression-trained model, scored on AU names
    assert predict(
        model, [{"image": resize(data["test_x"], 64), "au": torch.zeros(64, 2)}], tok, au_space, CPU
    ).scores.shape == (64, 2)


def test_warmup_cosine_schedule() -> None:
    lrs = [warmup_cosine(s, 100, 10, 1e-3, 1e-6) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-3) and lrs[100] == pytest.approx(1e-6)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
