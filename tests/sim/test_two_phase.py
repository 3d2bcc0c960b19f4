"""The simulator's public two-phase API: prepare (host draws) then propagate (device work) is simulate_samples,
and given heights come in as arrays through the HeightTiles protocol, with no store involved."""

from __future__ import annotations

import numpy as np
import torch

from tomoformer.sim import HeightTiles, PreparedSample, SimConfig, prepare, propagate, simulate_samples

CONFIG = SimConfig(size=16, frames=4, measured_fraction=0.5, sparsity_mode="path")


def test_prepare_then_propagate_is_simulate_samples_bit_for_bit() -> None:
    whole = simulate_samples(CONFIG, seed=3, start=2, count=3)
    samples = [prepare(CONFIG, 3, index) for index in (2, 3, 4)]
    assert all(isinstance(s, PreparedSample) for s in samples)
    signals = propagate(CONFIG, samples, torch.device("cpu"))
    assert signals.shape == (3, 4, 16, 16) and signals.dtype == torch.float32
    np.testing.assert_array_equal(signals.numpy(), whole["signals"])
    np.testing.assert_array_equal(np.stack([s.heights for s in samples]), whole["heights"])
    np.testing.assert_array_equal(np.stack([s.tx_pos for s in samples]), whole["tx_pos"])
    assert [s.group_id for s in samples] == whole["group"].tolist()
    # a sample's signals do not depend on the others in its call
    np.testing.assert_array_equal(propagate(CONFIG, samples[1:2], torch.device("cpu")).numpy(), whole["signals"][1:2])


class _Tiles:
    """Two hand-made tiles held in memory: a HeightTiles without any store."""

    def __init__(self) -> None:
        self.tiles = np.zeros((2, 16, 16), np.float32)
        self.tiles[0, 4:9, 4:9] = 12.0
        self.tiles[1, 8:14, 2:6] = 20.0

    def __len__(self) -> int:
        return 2

    def heights(self, index: int) -> np.ndarray:
        return self.tiles[index % 2]

    def group(self, index: int) -> int:
        return 7 + index % 2


def test_given_heights_come_in_as_arrays() -> None:
    tiles: HeightTiles = _Tiles()  # a structural protocol: no base class, no store
    out = simulate_samples(CONFIG, seed=0, start=0, count=3, geometry=tiles)
    np.testing.assert_array_equal(out["heights"], _Tiles().tiles[[0, 1, 0]])
    assert out["group"].tolist() == [7, 8, 7]
    np.testing.assert_array_equal(out["buildings"], (_Tiles().tiles[[0, 1, 0]] > CONFIG.rx_height_m).astype(np.uint8))
    # transmitters stand outdoors on the given heights
    rows, cols = np.clip(np.rint(out["tx_pos"][..., :2]).astype(int), 0, 15).transpose(2, 0, 1)
    inside = (out["tx_pos"][..., :2] >= -0.5).all(-1) & (out["tx_pos"][..., :2] <= 15.5).all(-1)
    heights = _Tiles().tiles[[0, 1, 0]][np.arange(3)[:, None], rows, cols]
    assert (heights[inside] <= CONFIG.rx_height_m).all()
