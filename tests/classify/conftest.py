"""Tiny image sets for the classification tests: 8x8 grey strokes, built here (no download)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tomoformer.classify.synthetic import SHAPES, stroke_images

# A ViT small enough for tests: 8x8 images, 2x2 patches, embed_dim 32, depth 2.
TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2}


def write_npz(path: Path, n: int, seed: int = 0, classes: int = len(SHAPES)) -> Path:
    """``n`` stroke images of the first ``classes`` shapes as an .npz (uint8 0-255, [N, 1, 8, 8])."""
    images, labels = stroke_images(n * len(SHAPES) // classes + len(SHAPES), seed=seed)
    keep = np.flatnonzero(labels < classes)[:n]
    pixels = np.round(images[keep] * 255).astype(np.uint8)
    np.savez(path, images=pixels, labels=labels[keep], class_names=np.asarray(SHAPES[:classes]))
    return path


@pytest.fixture
def strokes_npz(tmp_path: Path) -> Path:
    return write_npz(tmp_path / "strokes.npz", 160)


@pytest.fixture(autouse=True, scope="package")
def one_thread() -> Iterator[None]:
    """One intra-op thread: these models are tiny, and extra threads only contend on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
