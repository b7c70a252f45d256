"""Per-frame AU and expression predictions with trained CLEF models, on any frames.

`Predictor.from_uri(uri)` loads a checkpoint folder, an MLflow model URI (`models:/clef-bp4d/1`,
`runs:/<id>/model`) or a registered model's name (its latest version). `predict_frames(frames)`
finds and aligns the face in each frame (the preprocessing detector, tracked across frames),
scores the aligned crops in batches, and yields one `FrameResult` per input frame: never
dropping one (no face = `face_found` False and no scores). Face finding runs in a producer
thread, so it overlaps the model (OpenCV and torch release the GIL). Free-text labels
(`labels=[...]`) are scored zero-shot with the text tower.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clef_core.common.errors import ClefError
from clef_core.method.checkpoint import label_space_of, load_model
from clef_core.method.labels import LabelSpace
from clef_core.method.model import ClefModel, tokenizer_for
from clef_core.method.steps import class_logits, tokens
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


def resolve_model_dir(uri: str, tracking_uri: str | None, cache: Path) -> Path:
    """A local checkpoint folder for `uri` (downloaded from MLflow when it is not local)."""
    path = Path(uri).expanduser()
    if path.is_dir():
        return path
    if "/" in uri and not uri.startswith(("models:/", "runs:/")):  # a path, not a model name
        raise ClefError(
            f"model {uri!r}: no such checkpoint folder (expected model.pt and meta.json in it)"
        )
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    if not uri.startswith(("models:/", "runs:/")):
        versions = client.search_model_versions(f"name = '{uri}'")
        if not versions:
            raise ClefError(
                f"model {uri!r}: not a checkpoint folder, an MLflow URI (models:/NAME/VERSION, "
                f"runs:/ID/model) or a registered model name at {client.tracking_uri}"
            )
        uri = f"models:/{uri}/{max(int(v.version) for v in versions)}"
    target = cache / uri.replace(":/", "_").replace("/", "_")
    if not (target / "meta.json").is_file():
        from mlflow.exceptions import MlflowException

        try:  # the tracking URI is passed, never set for the whole process
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri,
                    dst_path=str(target),
                    tracking_uri=client.tracking_uri,
                    registry_uri=getattr(client, "_registry_uri", None) or client.tracking_uri,
                )
            )
        except (MlflowException, OSError) as err:  # no such model or version, store unreachable
            raise ClefError(f"cannot fetch model {uri} from {client.tracking_uri}: {err}") from None
        if not (local / "meta.json").is_file():  # a run's root: the checkpoint is under model/
            local = local / "model"
        return local
    return target


class Predictor:
    """One or more stage-2 models (say an AU model and an expression model) scoring frames."""

    def __init__(self, heads: list[_Head], device: torch.device, batch_size: int = 32,
                 labels: list[str] | None = None) -> None:  # fmt: skip
        if not heads:
            raise ClefError("no model given")
        self.heads = heads
        self.device = device
        self.batch_size = batch_size
        self.image_size = heads[0].model.image_size
        self.zero_shot: torch.Tensor | None = None
        self.labels = labels or []
        if self.labels:  # free text, scored by the first model's text tower
            h = heads[0]
            tok = tokenizer_for(h.model.config)
            with torch.no_grad():
                self.zero_shot = h.model.encode_text(
                    tokens(tok, name_prompts(tuple(self.labels)), device)
                )

    @classmethod
    def from_uri(cls, uris: str | list[str], device: str = "cpu", batch_size: int = 32,
                 labels: list[str] | None = None, tracking_uri: str | None = None,
                 cache: Path = Path.home() / ".cache" / "clef" / "models") -> Predictor:  # fmt: skip
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
            heads.append(_Head(model, space, threshold, text))
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

    @torch.no_grad()
    def _score(self, crops: np.ndarray) -> list[dict[str, Any]]:
        """Aligned RGB crops [B, S, S, 3] uint8 -> per-crop column values."""
        from clef_core.method.augment import resize

        x = resize(crops, self.image_size).to(self.device)
        rows: list[dict[str, Any]] = [{} for _ in range(len(crops))]
        for i, h in enumerate(self.heads):
            z = h.model.encode_image(x)
            logits = class_logits(h.model, z, h.text)
            if h.space.kind == "au":
                p = torch.sigmoid(logits).cpu().numpy()
                for r, row in zip(rows, p, strict=True):
                    for a, v in zip(h.space.labels, row, strict=True):
                        r[f"AU{a:02d}_p"] = float(v)
                        r[f"AU{a:02d}_c"] = int(v > h.threshold)
            else:
                p = torch.softmax(logits, -1).cpu().numpy()
                for r, row in zip(rows, p, strict=True):
                    r["expression"] = h.space.labels[int(row.argmax())]
                    r.update({f"{c}_p": float(v) for c, v in zip(h.space.labels, row, strict=True)})
            if i == 0 and self.zero_shot is not None:
                zs = torch.softmax(h.model.logit_scale() * z @ self.zero_shot.T, -1).cpu().numpy()
                names = self.columns()[-len(self.labels) :]
                for r, row in zip(rows, zs, strict=True):
                    r.update({n: float(v) for n, v in zip(names, row, strict=True)})
        return rows

    def predict_frames(
        self, frames: Iterable[np.ndarray], stride: int | None = 1
    ) -> Iterator[FrameResult]:
        """One result per BGR frame, in order; faces found in a thread, scored in batches.

        `stride`: frames of one video taken every `stride` source frames, so a face found is
        followed from frame to frame as in preprocessing; None: unrelated images, each searched
        on its own. Faces are found on the predictor's device (MTCNN runs there too)."""
        from preprocessing.align import face_transform, warp
        from preprocessing.detect import DetectorConfig, FaceTracker

        tracker = FaceTracker(DetectorConfig(device=str(self.device)), stride is not None)
        size = 224  # as the shards were aligned (preprocessing default), then resized
        found_q: queue.Queue = queue.Queue(maxsize=4 * self.batch_size)
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                for frame, d in tracker.track((f, f) for f in frames):
                    crop = (
                        None
                        if d is None
                        else warp(frame, face_transform(d.points, size), size)[..., ::-1]
                    )
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
        scored = iter(self._score(np.stack(crops)) if crops else [])
        for d, crop in items:
            if crop is None:
                yield FrameResult(False, 0.0, (0.0, 0.0, 0.0, 0.0), None, {})
            else:
                yield FrameResult(True, d.score, d.box, d.points, next(scored))


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")[:40]
