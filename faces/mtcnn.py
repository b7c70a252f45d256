"""MTCNN (Zhang et al. 2016): a face detector with 5 landmarks, on CPU or GPU.

The three networks (P-, R-, O-Net) are defined here and load the weights that the
facenet-pytorch wheel ships (MIT licence, converted from the authors' release; see
docs/faces.md); the package itself is not imported (its requirements pin an old torch and
its NMS needs torchvision's compiled ops). The cascade follows facenet-pytorch's
`detect_face` (same scale pyramid, thresholds, box regression and NMS), with two changes of
ours: crops that reach past the frame are zero-padded as in the authors' code (facenet-pytorch
stretches them), and frames are BGR (OpenCV's order) and converted per crop.

Landmark order everywhere in the project: the eye on the image's left, the eye on the image's
right, the nose tip, the mouth corner on the image's left, the one on the right.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

WEIGHTS_PACKAGE = "facenet_pytorch"  # installed without its dependencies (Makefile)
THRESHOLDS = (0.6, 0.7, 0.7)  # P-, R-, O-Net face probability (the authors' values)
PYRAMID_FACTOR = 0.709


class PNet(nn.Module):
    """12x12 proposal network, fully convolutional: face probability and box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), 1)


class RNet(nn.Module):
    """24x24 refinement network: face probability and box offsets per candidate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights were converted from Caffe/TF: the flatten order is (W, H, C).
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(len(x), -1)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), 1)


class ONet(nn.Module):
    """48x48 output network: face probability, box offsets and the 5 landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2 = nn.Linear(256, 2), nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(len(x), -1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), 1)


def weights_dir() -> Path:
    """The folder holding pnet.pt, rnet.pt and onet.pt (found without importing the package)."""
    from clef_core.common.errors import ClefError

    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ClefError(
            "MTCNN weights not found: expected the facenet-pytorch wheel's data files; "
            "install them with `pip install --no-deps facenet-pytorch==2.6.0` (`make install` does)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@cache
def networks(device: str = "cpu") -> tuple[PNet, RNet, ONet]:
    """The three networks with their weights, in eval mode; loaded once per process/device."""
    nets = (PNet(), RNet(), ONet())
    named: tuple[tuple[nn.Module, str], ...] = tuple(
        zip(nets, ("pnet", "rnet", "onet"), strict=True)
    )
    for net, name in named:
        state = torch.load(weights_dir() / f"{name}.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        net.to(device).eval().requires_grad_(False)
    return nets


@dataclass(frozen=True)
class Faces:
    """Faces found in one frame, in full-frame pixels."""

    boxes: np.ndarray  # [N, 4] x1, y1, x2, y2
    scores: np.ndarray  # [N] O-Net face probability
    points: np.ndarray  # [N, 5, 2] landmarks (x, y) in the project's order

    def __len__(self) -> int:
        return len(self.scores)


NO_FACES = Faces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2)))


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> list:
    """Greedy non-maximum suppression (MTCNN's: pixel-inclusive areas, "union" or "min")."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        if method == "min":
            overlap = inter / np.minimum(area[i], area[rest])
        else:
            overlap = inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return keep


def square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (the networks see square crops)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w / 2 - side / 2
    out[:, 1] = boxes[:, 1] + h / 2 - side / 2
    out[:, 2:4] = out[:, :2] + side[:, None]
    return out


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the networks' box offsets (fractions of the box's size)."""
    w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    return boxes[:, :4] + offsets * np.hstack([w, h, w, h])


def crops(frame: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """RGB crops [N, 3, size, size] normalised as the networks expect, from a BGR frame.

    A box is read at whole pixels (the authors' convention) and zero-padded where it reaches
    past the frame; area interpolation, as the networks were trained with."""
    h, w = frame.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(np.trunc(boxes[:, :4]).astype(int)):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw < 2 or bh < 2:
            continue
        if x1 >= 0 and y1 >= 0 and x2 < w and y2 < h:  # inside the frame: no copy
            patch = frame[y1 : y2 + 1, x1 : x2 + 1]
        else:
            patch = np.zeros((bh, bw, 3), np.uint8)
            sx0, sy0, sx1, sy1 = max(x1, 0), max(y1, 0), min(x2 + 1, w), min(y2 + 1, h)
            if sx1 > sx0 and sy1 > sy0:
                patch[sy0 - y1 : sy1 - y1, sx0 - x1 : sx1 - x1] = frame[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return network_input(out)


def network_input(bgr: np.ndarray) -> torch.Tensor:
    """BGR uint8 images [N, H, W, 3] -> RGB [N, 3, H, W] scaled to [-1, 1] as trained."""
    x = torch.from_numpy(bgr[..., ::-1].copy()).permute(0, 3, 1, 2).float()
    return (x - 127.5) * 0.0078125


class MTCNN:
    """The cascade on whole frames (`detect`) and O-Net alone on known boxes (`refine`)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.pnet, self.rnet, self.onet = networks(str(self.device))

    def _net(self, net: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode():
            return [o.float().cpu().numpy() for o in net(x.to(self.device))]

    def detect(self, frame: np.ndarray, min_face: float = 20.0) -> Faces:
        """Every face of at least `min_face` pixels in a BGR frame: the P-Net pyramid, then
        R-Net, then O-Net."""
        boxes = self._propose(frame, min_face)
        if len(boxes):
            offsets, prob = self._net(self.rnet, crops(frame, boxes, 24))
            keep = prob[:, 1] > THRESHOLDS[1]
            boxes, offsets, score = boxes[keep], offsets[keep], prob[keep, 1]
            pick = nms(boxes, score, 0.7)
            boxes = square(regress(boxes[pick], offsets[pick]))
        if not len(boxes):
            return NO_FACES
        faces = self.refine(frame, boxes)
        keep = faces.scores > THRESHOLDS[2]
        pick = nms(faces.boxes[keep], faces.scores[keep], 0.7, "min")
        return Faces(*(a[keep][pick] for a in (faces.boxes, faces.scores, faces.points)))

    def refine(self, frame: np.ndarray, boxes: np.ndarray) -> Faces:
        """O-Net on square boxes [N, 4] of a frame: refined boxes, face scores, landmarks.

        This is also the tracker's step: O-Net on the previous frame's box finds the face
        again when it has moved less than about a fifth of its size."""
        offsets, marks, prob = self._net(self.onet, crops(frame, boxes, 48))
        x1, y1 = boxes[:, 0:1], boxes[:, 1:2]
        w, h = boxes[:, 2:3] - x1 + 1, boxes[:, 3:4] - y1 + 1
        points = np.stack([x1 + w * marks[:, :5] - 1, y1 + h * marks[:, 5:] - 1], -1)
        refined = regress(boxes, offsets)
        return Faces(refined.astype(np.float32), prob[:, 1], points.astype(np.float32))

    def _propose(self, frame: np.ndarray, min_face: float) -> np.ndarray:
        """P-Net over the scale pyramid: candidate squares [N, 4], NMS'd per scale and overall."""
        h, w = frame.shape[:2]
        scale = 12.0 / min_face
        side = min(h, w) * scale
        found = []
        # The finest level is resized from the frame, the coarser ones from it: resizing a
        # large frame (BP4D's 1040 x 1392) once instead of per level.
        first = None
        while side >= 12:
            size = (int(w * scale + 1), int(h * scale + 1))
            level = cv2.resize(
                frame if first is None else first, size, interpolation=cv2.INTER_AREA
            )
            if first is None:
                first = level
            offsets, prob = self._net(self.pnet, network_input(level[None]))
            ys, xs = np.nonzero(prob[0, 1] >= THRESHOLDS[0])
            if len(ys):
                cells = np.stack([xs, ys], 1)
                cand = np.hstack(
                    [np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale)]
                )
                score = prob[0, 1, ys, xs]
                reg = offsets[0][:, ys, xs].T
                pick = nms(cand, score, 0.5)
                found.append(np.hstack([cand[pick], score[pick, None], reg[pick]]))
            scale *= PYRAMID_FACTOR
            side *= PYRAMID_FACTOR
        if not found:
            return np.zeros((0, 4), np.float32)
        cand = np.vstack(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        # P-Net's offsets are relative to the box's size without the +1 of the later stages.
        bw, bh = (cand[:, 2] - cand[:, 0])[:, None], (cand[:, 3] - cand[:, 1])[:, None]
        boxes = cand[:, :4] + cand[:, 5:9] * np.hstack([bw, bh, bw, bh])
        return square(boxes)
