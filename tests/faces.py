"""Small in-memory face images from the synthetic renderer, for training tests (no files)."""

from __future__ import annotations

import numpy as np

from faces.align import align_by_eyes
from synthetic.dynamics import EXPRESSION_PROTOTYPES, au_vector
from synthetic.identity import make_identity, rng_for
from synthetic.scene import SequenceRenderer


def expression_faces(
    classes: list[str], per_class: int, size: int = 64, seed: int = 0, people: int = 12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned RGB crops [N, size, size, 3] uint8, class index [N], AU intensities [N, 17].

    Each face shows its class's prototype at a random intensity, on one of `people` identities.
    """
    images, labels, aus = [], [], []
    for c, name in enumerate(classes):
        for k in range(per_class):
            rng = rng_for(seed, "faces", name, str(k))
            idt = make_identity(f"P{int(rng.integers(people)):02d}", seed)
            au = au_vector(EXPRESSION_PROTOTYPES[name]) * float(rng.uniform(0.8, 1.2))
            au = np.clip(au, 0, 5).astype(np.float32)
            renderer = SequenceRenderer(
                idt, rng, 1, (160, 160), no_face_share=0.0, light=(0.3, -0.2)
            )
            frame, truth = renderer.render(0, au)
            crop = align_by_eyes(frame, np.array(truth.eyes).reshape(2, 2), size)
            images.append(crop[..., ::-1])  # BGR -> RGB
            labels.append(c)
            aus.append(au)
    return np.stack(images), np.array(labels), np.stack(aus)
