"""Per-frame AU and expression predictions with trained CLEF models, on any frames.

`Predictor.from_uri(uri)` loads a checkpoint folder, an MLflow model URI (`models:/clef-bp4d/1`,
`runs:/<id>/model`) or a registered model's name (its latest version), fetched once into a
cache keyed by tracking server and version (`registry`). `predict_frames(frames)`
finds and aligns the face in each frame (the preprocessing detector, tracked across frames),
scores the aligned crops in batches (`score_crops`: on a GPU, uint8 crops through pinned
memory, resized there, bf16 autocast), and yields one `FrameResult` per input frame: never
dropping one (no face = `face_found` False and no scores). Face finding runs in a producer
thread, so it overlaps the model (OpenCV and torch release the GIL). Free-text labels
(`labels=[...]`) are scored zero-shot with the text tower.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clef_core.common.errors import ClefError
from clef_core.inference.registry import resolve_model_dir
from clef_core.method.checkpoint import label_space_of, load_model
from clef_core.method.hardware import native_bf16
from clef_core.method.labels import LabelSpace
from clef_core.method.model import ClefModel, tokenizer_for
from clef_core.method.steps import autocast_for, class_logits, tokens
from clef_core.method.text import name_prompts


@dataclass
class FrameResult:
    face_found: bool
    face_score: float
    box: tuple[float, float, float, float]  # x, y, w, h in frame pixels (zeros: no face)
    points: np.ndarray | None  # [5, 2] landmarks in frame pixels (detect.Detection's order)
    scores: dict[str, float]  # column name -> probability (empty when no face)


@dataclass
class _Head:
    model: ClefModel
    space: LabelSpace
    threshold: float
    text: torch.Tensor | None  # [C, d] class text features (names head), computed once
    precision: str = "fp32"  # "bf16" (autocast) or "fp32": `inference_precision`


def inference_precision(
    trained: str, asked: str, device: torch.device, native: bool | None = None
) -> str:
    """ "bf16" or "fp32" for a model whose config says `trained` (its `compute.precision`),
    when the user asks `asked` ("auto", "bf16", "fp32"). "auto" (ours) keeps the model's own
    choice ("bf16"; "auto" = bf16 on CUDA) only where the hardware computes bf16 natively
    (`native`, default `hardware.native_bf16`): on a CPU without AVX512-BF16 or AMX, bf16 is
    emulated and slower than fp32. Asked for explicitly, either is used as asked."""
    if asked in ("bf16", "fp32"):
        return asked
    if asked != "auto":
        raise ClefError(f"precision {asked!r}: expected auto, bf16 or fp32")
    native = native_bf16(device) if native is None else native
    wants = trained == "bf16" or (trained == "auto" and device.type == "cuda")
    return "bf16" if wants and native else "fp32"


class Predictor:
    """One or more stage-2 models (say an AU model and an expression model) scoring frames.

    On CUDA the aligned crops go to the GPU as uint8 through a reusable pinned buffer (an
    asynchronous copy), are resized and normalised there; on the CPU they are resized there.
    The towers run in the precision `inference_precision` picks for each model. Class text
    features are computed once, when the predictor is built."""

    def __init__(self, heads: list[_Head], device: torch.device, batch_size: int | None = None,
                 labels: list[str] | None = None) -> None:  # fmt: skip
        if not heads:
            raise ClefError("no model given")
        self.heads = heads
        self.device = device
        self.batch_size = batch_size or default_batch_size(device)
        self.image_size = heads[0].model.image_size
        self.zero_shot: torch.Tensor | None = None
        self.labels = labels or []
        self._staging: torch.Tensor | None = None  # pinned uint8 crops (CUDA only)
        if self.labels:  # free text, scored by the first model's text tower
            h = heads[0]
            tok = tokenizer_for(h.model.config)
            with torch.no_grad():
                self.zero_shot = h.model.encode_text(
                    tokens(tok, name_prompts(tuple(self.labels)), device)
                )

    @classmethod
    def from_uri(cls, uris: str | list[str], device: str = "cpu", batch_size: int | None = None,
                 labels: list[str] | None = None, tracking_uri: str | None = None,
                 cache: Path = Path.home() / ".cache" / "clef" / "models",
                 precision: str = "auto") -> Predictor:  # fmt: skip
        dev = torch.device(device)
        heads = []
        for uri in [uris] if isinstance(uris, str) else uris:
            folder = resolve_model_dir(uri, tracking_uri, cache)
            model, meta = load_model(folder, map_location=dev)
            space = label_space_of(meta)
            if space is None:
                raise ClefError(f"{uri} is a stage-1 model: it has no AU or expression heads")
            model.to(dev).eval()
            text = None
            if model.head is None:
                tok = tokenizer_for(model.config)
                with torch.no_grad():
                    text = model.encode_text(tokens(tok, name_prompts(space.labels), dev))
            threshold = float(meta["config"]["stage2"]["threshold"])
            trained = str(meta["config"].get("compute", {}).get("precision", "auto"))
            chosen = inference_precision(trained, precision, dev)
            heads.append(_Head(model, space, threshold, text, chosen))
        return cls(heads, dev, batch_size, labels)

    def columns(self) -> list[str]:
        """The score columns, in output order."""
        out: list[str] = []
        for h in self.heads:
            if h.space.kind == "au":
                out += [f"AU{a:02d}_p" for a in h.space.labels] + [
                    f"AU{a:02d}_c" for a in h.space.labels
                ]
            else:
                out += ["expression"] + [f"{c}_p" for c in h.space.labels]
        return out + [f"zs_{i}_{_slug(t)}" for i, t in enumerate(self.labels)]

    def _model_input(self, crops: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """Crops -> the normalised float batch on the device, at the model's side."""
        from clef_core.method.augment import resize

        if self.device.type != "cuda":  # as it always was: the CPU resizes, then the copy
            array = crops if isinstance(crops, np.ndarray) else np.stack(crops)
            return resize(array, self.image_size).to(self.device)
        n, shape = len(crops), tuple(crops[0].shape)
        staging = self._staging
        if staging is None or staging.shape[0] < n or tuple(staging.shape[1:]) != shape:
            # Page-locked once, reused: an asynchronous copy needs pinned memory, and pinning
            # a fresh array per batch would cost more than the copy. The previous batch's copy
            # is done before this one overwrites it: each `score_crops` ends reading results
            # back, after its copy in the stream's order.
            staging = torch.empty((max(n, self.batch_size), *shape), dtype=torch.uint8)
            self._staging = staging = staging.pin_memory()
        host = staging[:n]
        if isinstance(crops, np.ndarray):
            host.copy_(torch.from_numpy(np.ascontiguousarray(crops)))
        else:
            np.stack(crops, out=host.numpy())
        return resize(host.to(self.device, non_blocking=True), self.image_size)

    @torch.no_grad()
    def score_crops(self, crops: np.ndarray | Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """Aligned RGB crops (uint8 [B, S, S, 3], or a list of [S, S, 3]) -> per-crop column
        values, in one batch on the predictor's device."""
        x = self._model_input(crops)
        rows: list[dict[str, Any]] = [{} for _ in range(len(crops))]
        for i, h in enumerate(self.heads):
            with autocast_for(self.device, h.precision):
                z = h.model.encode_image(x)
                logits = class_logits(h.model, z, h.text)
                zs = None
                if i == 0 and self.zero_shot is not None:
                    zs = torch.softmax(h.model.logit_scale() * z @ self.zero_shot.T, -1)
            if h.space.kind == "au":
                p = torch.sigmoid(logits).float().cpu().numpy()
                present = (p > h.threshold).astype(np.int64)  # as float32 vs the threshold
                names_p = [f"AU{a:02d}_p" for a in h.space.labels]
                names_c = [f"AU{a:02d}_c" for a in h.space.labels]
                for r, row_p, row_c in zip(rows, p.tolist(), present.tolist(), strict=True):
                    r.update(zip(names_p, row_p, strict=True))
                    r.update(zip(names_c, row_c, strict=True))
            else:
                p = torch.softmax(logits.float(), -1).cpu().numpy()
                names = [f"{c}_p" for c in h.space.labels]
                for r, best, row in zip(rows, p.argmax(1).tolist(), p.tolist(), strict=True):
                    r["expression"] = h.space.labels[best]
                    r.update(zip(names, row, strict=True))
            if zs is not None:
                names = self.columns()[-len(self.labels) :]
                for r, row in zip(rows, zs.float().cpu().numpy().tolist(), strict=True):
                    r.update(zip(names, row, strict=True))
        return rows

    def predict_frames(
        self, frames: Iterable[np.ndarray], stride: int | None = 1
    ) -> Iterator[FrameResult]:
        """One result per BGR frame, in order; faces found in a thread, scored in batches.

        `stride`: frames of one video taken every `stride` source frames, so a face found is
        followed from frame to frame as in preprocessing; None: unrelated images, each searched
        on its own. Faces are found on the predictor's device (MTCNN runs there too)."""
        found_q: queue.Queue = queue.Queue(maxsize=4 * self.batch_size)
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                for d, crop in aligned_faces(frames, self.device, follow=stride is not None):
                    found_q.put((d, crop))
            except BaseException as err:  # re-raised in the caller, after the frames read so far
                errors.append(err)
            finally:
                found_q.put(None)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        pending: list[tuple[Any, Any]] = []
        while True:
            item = found_q.get()
            if item is not None:
                pending.append(item)
            if pending and (item is None or len(pending) >= self.batch_size):
                yield from self._flush(pending)
                pending = []
            if item is None:
                break
        thread.join()
        if errors:
            raise errors[0]

    def _flush(self, items: list[tuple[Any, Any]]) -> Iterator[FrameResult]:
        crops = [c for _, c in items if c is not None]
        scored = iter(self.score_crops(crops) if crops else [])
        for d, crop in items:
            if crop is None:
                yield FrameResult(False, 0.0, (0.0, 0.0, 0.0, 0.0), None, {})
            else:
                yield FrameResult(True, d.score, d.box, d.points, next(scored))


CROP_SIZE = 224  # faces are aligned at the shards' size (preprocessing default), then resized


def aligned_faces(
    frames: Iterable[np.ndarray], device: torch.device, follow: bool
) -> Iterator[tuple[Any, np.ndarray | None]]:
    """(detection or None, aligned RGB crop [224, 224, 3] or None) per BGR frame, in order: the
    preprocessing detector and 5-point alignment, exactly as the shards were made. `follow`:
    frames of one video (a face found is tracked); False: each frame searched on its own."""
    from faces.align import face_transform, warp
    from faces.detect import DetectorConfig, FaceTracker

    tracker = FaceTracker(DetectorConfig(device=str(device)), follow)
    for frame, d in tracker.track((f, f) for f in frames):
        if d is None:
            yield None, None
        else:
            yield d, warp(frame, face_transform(d.points, CROP_SIZE), CROP_SIZE)[..., ::-1]


def default_batch_size(device: torch.device) -> int:
    """Faces scored per batch when none is given: 32 on the CPU (as before); 256 on a GPU,
    where a batch of 32 leaves a ViT-B/16 forward too short to fill it (ours)."""
    return 256 if device.type == "cuda" else 32


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")[:40]
