"""Shared fixtures: tiny labelled datasets the tests build themselves (no simulator, no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

from tomoformer.data.format import write_dataset

torch.set_num_threads(2)


def toy_arrays(n: int = 16, t: int = 4, size: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Blocks that attenuate the signal: buildings cost 20 dB plus noise, so a model can learn the map."""
    rng = np.random.default_rng(seed)
    buildings = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        for _ in range(3):
            r, c = rng.integers(0, size - 4, 2)
            h, w = rng.integers(2, 5, 2)
            buildings[i, r : r + h, c : c + w] = 1
    tx = np.concatenate([rng.uniform(0, size, (n, t, 2)), rng.uniform(5, 20, (n, t, 1))], -1).astype(np.float32)
    rows, cols = np.mgrid[0:size, 0:size]
    dist = np.sqrt((rows[None, None] - tx[..., 0, None, None]) ** 2 + (cols[None, None] - tx[..., 1, None, None]) ** 2)
    signals = -40 - 20 * np.log10(dist + 1) - 20 * buildings[:, None] + rng.normal(0, 2, (n, t, size, size))
    return {
        "signals": signals.astype(np.float32),
        "buildings": buildings,
        "tx_pos": tx,
        "group": (np.arange(n) % 2).astype(np.int16),
    }


@pytest.fixture
def toy_dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "toy.zarr", toy_arrays(), {"cell_size_m": 2.0, "group_names": ["a", "b"]})


# Property tests draw the same examples on every run, so CI is never red by the luck of the draw.
settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.load_profile("repeatable")
