"""What `clef explain` writes per image: the grid PNG (the aligned face, then per prompt its
relevance map over the face with the class, its probability and cosine, and the prompt's words
on a green scale: the darker the green, the more the text tower weighs the word, as in the
paper's Figure 4) and a JSON of the scores, per-token relevances and mouth-region shares."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from clef_core.inference.explain import (
    Explanation,
    class_prompts,
    explain_crop,
    mouth_box,
    region_share,
)
from clef_core.method.labels import LabelSpace
from clef_core.method.model import ClefModel
from clef_core.method.text import label_name

COLUMNS = 6  # panels per row
PANEL_IN = 1.9  # panel side, inches
WORDS_IN = 0.75  # the words' strip under each panel, inches
FONT = 6.0  # points (monospace: each character is 0.6 of it wide)


def explanation_grid(
    crop: np.ndarray,
    explanations: Sequence[Explanation],
    path: Path,
    title: str,
    mouth: tuple[float, float, float, float] | None = None,
    dpi: int = 100,
) -> Path:
    """Write the grid PNG for one face: crop RGB uint8 [H, W, 3]; `mouth` (x0, y0, x1, y1 in
    crop pixels) is outlined on the face panel when given."""
    panels = 1 + len(explanations)
    rows = -(-panels // COLUMNS)
    height = rows * (PANEL_IN + WORDS_IN) + 0.7  # inches; 0.7: the title and first panel titles
    fig = Figure(figsize=(COLUMNS * PANEL_IN, height))
    grid = fig.add_gridspec(2 * rows, COLUMNS, height_ratios=[PANEL_IN, WORDS_IN] * rows,
                            hspace=0.3, wspace=0.06, left=0.01, right=0.99,
                            top=1 - 0.7 / height, bottom=0.01)  # fmt: skip
    fig.suptitle(title, fontsize=9)
    face = fig.add_subplot(grid[0, 0])
    face.imshow(crop)
    face.set_title("aligned face", fontsize=7)
    if mouth is not None:
        x0, y0, x1, y1 = mouth
        face.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#ffd400", lw=1))
    _off(face)
    fig.add_subplot(grid[1, 0]).set_axis_off()
    for k, e in enumerate(explanations, start=1):
        r, c = divmod(k, COLUMNS)
        ax = fig.add_subplot(grid[2 * r, c])
        _overlay(ax, crop, e)
        _words(fig.add_subplot(grid[2 * r + 1, c]), e.tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _overlay(ax: Axes, crop: np.ndarray, e: Explanation) -> None:
    import cv2

    h, w = crop.shape[:2]
    heat = cv2.resize(e.heatmap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    ax.imshow(crop)
    ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)  # ours: jet at 45% over the face
    name = e.prompt.label
    if e.prompt.kind != "free":
        key: int | str = int(name[2:]) if name.startswith("AU") else name
        name = f"{name} {label_name(key)}" if e.prompt.kind == "name" else f"{name} description"
    score = f"cos {e.score:+.2f}" + (
        f", p {e.probability:.2f}" if e.probability is not None else ""
    )
    ax.set_title(f"{textwrap.shorten(name, 30)}\n{score}", fontsize=6.5)
    _off(ax)


def _words(ax: Axes, tokens: Sequence[tuple[str, float]]) -> None:
    """The prompt's word pieces left to right, wrapped, each on a background from white (0)
    to green (1: the piece the text tower weighs most)."""
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    width_pt = ax.get_position().width * ax.figure.get_figwidth() * 72  # type: ignore[union-attr]
    per_line = max(int(width_pt / (0.6 * FONT)), 8)
    x, line = 0, 0
    for piece, rel in tokens:
        if x + len(piece.rstrip()) > per_line and x > 0:
            x, line = 0, line + 1
        g = float(np.clip(rel, 0.0, 1.0))
        ax.text(x / per_line, 0.92 - 0.17 * line, piece.rstrip(), family="monospace",
                fontsize=FONT, va="top", ha="left",
                bbox={"facecolor": (1 - 0.8 * g, 1 - 0.25 * g, 1 - 0.8 * g), "edgecolor": "none",
                      "pad": 0.6})  # fmt: skip
        x += len(piece)


def _off(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


@dataclass
class ExplainedImage:
    source: Path
    png: Path | None = None
    json: Path | None = None
    error: str | None = None  # what was wrong with the input (nothing written)
    mouth: dict[str, tuple[float, float]] | None = None  # prompt -> (mass share, area share)


def explain_image(
    model: ClefModel, space: LabelSpace | None, path: Path, out: Path, free: Sequence[str] = (),
    title: str = "", layer: str = "layer4",
) -> ExplainedImage:  # fmt: skip
    """Find and align the face in the image at `path` as `clef predict` does, explain every
    class prompt (and each free text) on it, write `<out>/<stem>.png` and `.json`."""
    from clef_core.inference.predictor import CROP_SIZE, aligned_faces
    from faces.align import face_transform
    from faces.decode import DecodeError, read_image

    try:
        image = read_image(path)
    except DecodeError:
        return ExplainedImage(
            path, error=f"{path}: not a readable image (expected a JPEG, PNG, ...)"
        )
    device = next(model.parameters()).device
    d, crop = next(aligned_faces([image], device, follow=False))
    if d is None or crop is None:
        return ExplainedImage(path, error=f"{path}: no face found (expected a photo with a face)")
    m = face_transform(d.points, CROP_SIZE)  # [2, 3]: frame -> crop pixels
    points = d.points @ m[:, :2].T + m[:, 2]  # [5, 2] in crop pixels
    crop = np.ascontiguousarray(crop)
    explanations = explain_crop(model, space, crop, class_prompts(space, free), layer)
    box = mouth_box(points, CROP_SIZE)
    s = explanations[0].heatmap.shape[0] / CROP_SIZE  # crop -> heatmap pixels
    shares = {
        f"{e.prompt.label} {e.prompt.kind}": region_share(e.heatmap, tuple(v * s for v in box))  # type: ignore[arg-type]
        for e in explanations
    }
    png = explanation_grid(crop, explanations, out / f"{path.stem}.png",
                           title or path.name, mouth=box)  # fmt: skip
    record = {
        "image": str(path),
        "face": {"score": float(d.score), "box": [float(v) for v in d.box],
                 "points_crop": points.round(2).tolist(), "crop_size": CROP_SIZE},
        "mouth_box_crop": [round(v, 2) for v in box],
        "prompts": [_record(e, shares[f"{e.prompt.label} {e.prompt.kind}"]) for e in explanations],
    }  # fmt: skip
    js = out / f"{path.stem}.json"
    js.write_text(json.dumps(record, indent=1))
    return ExplainedImage(path, png, js, mouth=shares)


def _record(e: Explanation, share: tuple[float, float]) -> dict:
    return {
        "label": e.prompt.label, "kind": e.prompt.kind, "prompt": e.prompt.text,
        "cosine": round(e.score, 5),
        "probability": None if e.probability is None else round(e.probability, 5),
        "mouth_mass_share": round(share[0], 4), "mouth_area_share": round(share[1], 4),
        "tokens": [{"token": t, "relevance": round(r, 4)} for t, r in e.tokens],
    }  # fmt: skip


def load_explainer(
    uri: str, device: str, tracking_uri: str | None, cache: Path
) -> tuple[ClefModel, LabelSpace | None]:
    """The checkpoint at `uri` (a folder, models:/..., runs:/... or a registered name), in eval
    mode on `device`, and its label space (None: stage 1). Anything that is not a loadable CLEF
    checkpoint is one ClefError line saying what was expected and what was found."""
    from clef_core.common.errors import ClefError
    from clef_core.inference.registry import resolve_model_dir
    from clef_core.method.checkpoint import (
        checkpoint_problem,
        label_space_of,
        load_model,
        read_meta,
    )

    folder = resolve_model_dir(uri, tracking_uri, cache)
    read_meta(folder)  # "not a CLEF checkpoint: expected meta.json and model.pt in it"
    problem = checkpoint_problem(folder)
    if problem:
        raise ClefError(f"{uri}: expected a CLEF checkpoint, found a damaged file: {problem}")
    try:
        model, meta = load_model(folder, map_location=device)
    except (KeyError, ValueError, RuntimeError) as err:  # a config or weights of another model
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ClefError(
            f"{uri}: expected a CLEF checkpoint, found one that does not load: {first}"
        ) from None
    return model.to(device).eval(), label_space_of(meta)
