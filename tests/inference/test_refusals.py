"""A model file that cannot be loaded safely is refused as bad input (issue #31): a pickle
with code in it (the code never runs), random bytes, a file cut short. `clef predict` exits 2
with one line saying what was expected, no traceback, and never advises loading the file
unsafely."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clef_core.method.checkpoint import save_checkpoint
from clef_core.method.config import load_config
from clef_core.method.labels import LabelSpace
from clef_core.method.model import build_model


class _Payload:
    """Unpickling this runs `touch <proof>`: what a malicious model file carries."""

    def __init__(self, proof: Path):
        self.proof = proof

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (subprocess.call, (["touch", str(self.proof)],))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_config("cpu-tiny")
    out = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(out, build_model(cfg.model), cfg, 2, 0, 0, LabelSpace.aus((1, 2)))


@pytest.mark.parametrize("kind", ["malicious", "random", "cut"])
def test_an_unsafe_or_damaged_model_file_is_refused_in_one_line(
    checkpoint: Path, tmp_path: Path, kind: str
) -> None:
    import shutil

    import cv2

    model = tmp_path / "model"
    shutil.copytree(checkpoint, model)
    proof = tmp_path / "proof.txt"
    weights = model / "model.pt"
    if kind == "malicious":
        torch.save({"w": _Payload(proof)}, weights)
    elif kind == "random":
        weights.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        weights.write_bytes(weights.read_bytes()[:2000])
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), np.full((64, 64, 3), 128, np.uint8))
    run = subprocess.run(
        [str(Path(sys.executable).with_name("clef")), "predict", str(image), "--model",
         str(model), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2, run.stdout + run.stderr
    assert len(lines) == 1 and "expected a PyTorch file of tensors" in lines[0], run.stderr
    assert "weights_only=False" not in run.stderr + run.stdout
    assert not proof.exists()  # the payload never ran
