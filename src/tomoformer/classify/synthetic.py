"""A generated pretraining set: stroke shapes drawn like scikit-learn's digits, deterministic from a seed.

scikit-learn's 8x8 digits are 32x32 binary bitmaps of handwriting summed over 4x4 blocks (values 0-16). The
strokes here are drawn the same way: random pen width, position, size and rotation on a 32x32 canvas, then
block-averaged to ``size x size``, so a model pretrained on them has seen the pixel statistics of the digits
but none of their classes.
"""

from __future__ import annotations

import math

import numpy as np

SHAPES = ("horizontal", "vertical", "diagonal", "antidiagonal", "ring", "plus", "cross", "corner", "triangle", "arc")
_CANVAS = 32


def _rotate(points: np.ndarray, angle: float, centre: np.ndarray) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return (points - centre) @ np.array([[c, s], [-s, c]]) + centre


def _draw(kind: str, rng: np.random.Generator):  # -> PIL.Image.Image
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
    pen = ImageDraw.Draw(canvas)
    width = int(rng.integers(3, 8))
    half = rng.uniform(8, 14.5)  # half-size of the shape, canvas pixels
    centre = rng.uniform(half + 1, _CANVAS - half - 1, 2)
    angle = rng.normal(0, 0.15)  # a slight slant, as in handwriting
    x0, y0 = centre - half
    x1, y1 = centre + half
    segments: list[list[tuple[float, float]]] = {
        "horizontal": [[(x0, centre[1]), (x1, centre[1])]],
        "vertical": [[(centre[0], y0), (centre[0], y1)]],
        "diagonal": [[(x0, y0), (x1, y1)]],
        "antidiagonal": [[(x0, y1), (x1, y0)]],
        "plus": [[(x0, centre[1]), (x1, centre[1])], [(centre[0], y0), (centre[0], y1)]],
        "cross": [[(x0, y0), (x1, y1)], [(x0, y1), (x1, y0)]],
        "corner": [[(x0, y0), (x0, y1), (x1, y1)]],
        "triangle": [[(centre[0], y0), (x1, y1), (x0, y1), (centre[0], y0)]],
    }.get(kind, [])
    for line in segments:
        points = _rotate(np.asarray(line, dtype=float), angle, centre)
        pen.line([tuple(p) for p in points], fill=255, width=width, joint="curve")
    if kind == "ring":
        squash = rng.uniform(0.6, 1.0)  # ellipses from tall to round
        pen.ellipse([x0 + half * (1 - squash), y0, x1 - half * (1 - squash), y1], outline=255, width=width)
    elif kind == "arc":
        start = rng.uniform(0, 360)
        pen.arc([x0, y0, x1, y1], start, start + rng.uniform(150, 220), fill=255, width=width)
    return canvas


def stroke_images(n: int, seed: int = 0, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``[n, 1, size, size]`` float32 in [0, 1] and labels ``[n]`` int64 in ``[0, len(SHAPES))``
    (balanced, shuffled). Same ``n``, ``seed`` and ``size``: same arrays."""
    if _CANVAS % size:
        raise ValueError(f"size must divide {_CANVAS}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(SHAPES))
    block = _CANVAS // size
    images = np.empty((n, 1, size, size), dtype=np.float32)
    for i, label in enumerate(labels):
        bitmap = np.asarray(_draw(SHAPES[label], rng), dtype=np.float32) > 127  # binary ink, as the digits' scans
        images[i, 0] = bitmap.reshape(size, block, size, block).mean((1, 3))
    return images, labels.astype(np.int64)
