"""The generated stroke set: deterministic, balanced, in [0, 1], with visibly different classes."""

from __future__ import annotations

import numpy as np

from tomoformer.classify.synthetic import SHAPES, stroke_images


def test_same_seed_same_images_other_seed_other_images() -> None:
    images, labels = stroke_images(50, seed=1)
    again, labels_again = stroke_images(50, seed=1)
    other, _ = stroke_images(50, seed=2)
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert not np.array_equal(images, other)


def test_shapes_values_and_balance() -> None:
    images, labels = stroke_images(100, seed=0, size=16)
    assert images.shape == (100, 1, 16, 16) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1 and (images.reshape(100, -1).max(1) > 0.5).all()  # ink on each
    assert np.bincount(labels, minlength=len(SHAPES)).tolist() == [10] * len(SHAPES)


def test_horizontal_and_vertical_strokes_lie_along_their_axes() -> None:
    images, labels = stroke_images(200, seed=0)
    for kind in ("horizontal", "vertical"):
        ink = images[labels == SHAPES.index(kind), 0]  # [20, 8, 8]
        rows = (ink.sum(2) > 0.2).sum(1)  # rows holding ink
        cols = (ink.sum(1) > 0.2).sum(1)  # columns holding ink
        longer, shorter = (cols, rows) if kind == "horizontal" else (rows, cols)
        assert len(ink) == 20 and np.mean(longer > shorter) > 0.8  # ink spreads along the stroke
