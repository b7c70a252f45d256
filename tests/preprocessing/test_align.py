"""Alignment crops: a crop that shrinks its source averages it (no aliasing), one that does
not is the plain bilinear crop."""

from __future__ import annotations

import cv2
import numpy as np

from faces.align import box_transform, eye_transform, warp


def plain(image: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(
        image, transform, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def test_a_crop_that_shrinks_its_source_averages_it_instead_of_aliasing() -> None:
    # 1-pixel black and white squares: any average of them is mid-grey, a sampling is not.
    checker = np.repeat(
        (np.indices((1200, 1000)).sum(0) % 2 * 255).astype(np.uint8)[..., None], 3, 2
    )
    square = box_transform((100, 200, 800, 800), 224)  # 3.6x smaller, no rotation
    tilted = eye_transform(np.array([[300.0, 500.0], [700.0, 560.0]]), 224)  # 6.4x, rotated
    for transform in (square, tilted):
        assert plain(checker, transform, 224).std() > 30  # what bilinear sampling alone gives
        crop = warp(checker, transform, 224)
        assert crop.std() < 8 and abs(crop.mean() - 127.5) < 3


def test_shrunk_crops_sample_the_same_places_and_unshrunk_ones_are_unchanged() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (1200, 1000, 3), dtype=np.uint8)
    image = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 4), None, 0, 255, cv2.NORM_MINMAX)
    # Smooth texture: averaging changes it little, blocks misplaced by half a block change it
    # more (mean abs difference to the plain warp as it is: 1.1 and 3.7; misplaced: 2.8, 7.7).
    square = box_transform((100, 200, 800, 800), 224)  # 3.6x: 2 x 2 blocks
    tilted = eye_transform(np.array([[300.0, 500.0], [700.0, 560.0]]), 224)  # 6.4x: 4 x 4
    for transform, bound in ((square, 2.0), (tilted, 5.5)):
        shrunk = warp(image, transform, 224).astype(int)
        assert np.abs(shrunk - plain(image, transform, 224)).mean() < bound
    # Under 2x smaller: the bilinear crop as before, pixel for pixel.
    near = box_transform((100, 200, 300, 300), 224)
    assert np.array_equal(
        warp(image, near, 224),
        cv2.resize(image[200:500, 100:400], (224, 224), interpolation=cv2.INTER_LINEAR),
    )
    tilted = eye_transform(np.array([[300.0, 500.0], [420.0, 530.0]]), 224)
    assert np.array_equal(warp(image, tilted, 224), plain(image, tilted, 224))
