"""City generator v2: every style valid at any size, reproducible, shaped like its real counterpart."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tomoformer.evaluation.morphology import MorphologySummary, tile_morphology
from tomoformer.sim import SimConfig, simulate_samples
from tomoformer.sim.cities import MIXED_WEIGHTS, draw_style, make_city
from tomoformer.sim.cities_v2 import V2_STYLES
from tomoformer.sim.citygeom import obb_subdivide, street_axis
from tomoformer.sim.config import STYLES


@pytest.mark.parametrize("size", [16, 100])
@pytest.mark.parametrize("style", STYLES)
def test_every_style_gives_valid_heights(style: str, size: int) -> None:
    rng = np.random.default_rng(3)
    for _ in range(3):
        h = make_city(style, size, rng, 2.0)
        assert h.shape == (size, size) and h.dtype == np.float32
        assert np.isfinite(h).all() and (h >= 0).all()
        assert (h[h > 0] >= 3).all()  # a building is taller than the receiver (1.5 m)


@pytest.mark.parametrize("style", V2_STYLES)
def test_styles_are_reproducible_by_seed(style: str) -> None:
    a = make_city(style, 64, np.random.default_rng(11), 2.0)
    b = make_city(style, 64, np.random.default_rng(11), 2.0)
    np.testing.assert_array_equal(a, b)
    others = [make_city(style, 64, np.random.default_rng(s), 2.0) for s in range(12, 16)]
    assert any(not np.array_equal(a, o) for o in others)


def _summary(style: str, n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tiles = [tile_morphology(make_city(style, 100, rng, 2.0) > 1.5, 2.0) for _ in range(n)]
    return MorphologySummary.from_tiles(style, 2.0, tiles).stats()


def test_new_styles_differ_from_old_ones() -> None:
    dense, perimeter, irregular = _summary("dense", 8), _summary("perimeter", 8), _summary("irregular", 8)
    # The old grid is axis-aligned on every tile; perimeter grids lie at any angle, irregular streets within a tile.
    assert dense["grid_angle_spread_deg"] < 1 < 20 < perimeter["grid_angle_spread_deg"]
    assert irregular["orientation_spread_median_deg"] > dense["orientation_spread_median_deg"] + 5
    # Perimeter blocks enclose courtyards; the old dense grid of separate buildings hardly ever does.
    assert perimeter["courtyard_share"] > 0.01 > dense["courtyard_share"]


def test_heights_per_style() -> None:
    rng = np.random.default_rng(5)
    houses = np.concatenate([make_city("detached", 100, rng, 2.0).ravel() for _ in range(4)])
    towers = np.concatenate([make_city("highrise", 100, rng, 2.0).ravel() for _ in range(6)])
    blocks = np.concatenate([make_city("perimeter", 100, rng, 2.0).ravel() for _ in range(4)])
    assert houses.max() <= 9.5 and houses[houses > 0].min() >= 4
    assert towers.max() >= 35
    assert 10 < np.median(blocks[blocks > 0]) < 30


def test_style_scale_follows_cell_size() -> None:
    """Metres, not cells: at 1 m cells a detached house covers four times as many cells as at 2 m."""

    def masses(size: int, cell: float) -> list[float]:
        maps = [make_city("detached", size, np.random.default_rng(seed), cell) for seed in range(4)]
        return [a for h in maps for a in tile_morphology(h > 0, cell).mass_areas_m2]

    assert 0.6 < np.median(masses(120, 1.0)) / np.median(masses(60, 2.0)) < 1.6


def test_obb_subdivide_cuts_across_the_long_axis() -> None:
    regions = np.zeros((10, 40), np.int64)
    # Every parcel above 120 cells is at least 13 cells long, so its long axis is always the 40-cell one.
    parcels = obb_subdivide(regions, np.ones_like(regions, bool), 120, 2, np.random.default_rng(0))
    n = parcels.max() + 1
    assert parcels.min() == 0 and set(np.unique(parcels)) == set(range(n))
    assert (np.bincount(parcels.ravel()) <= 120).all() and n >= 4
    for p in range(n):  # each parcel is a strip across the whole short side
        rows, _ = np.nonzero(parcels == p)
        assert rows.min() == 0 and rows.max() == 9
    # Invalid cells stay -1; per-cell targets split one region finer than the other.
    regions[:, 20:] = 1
    valid = np.ones_like(regions, bool)
    valid[0] = False
    target = np.where(regions == 0, 20.0, 200.0)
    parcels = obb_subdivide(regions, valid, target, 1, np.random.default_rng(0))
    assert (parcels[0] == -1).all()
    assert len(np.unique(parcels[1:, :20])) > len(np.unique(parcels[1:, 20:])) == 1


def test_street_axis_lays_blocks_and_streets() -> None:
    u = np.arange(200, dtype=np.float64)
    axis = street_axis(u, np.random.default_rng(0), (20, 30), (5, 8))
    inside = axis.inside
    runs = np.diff(np.flatnonzero(np.diff(inside.astype(int)) != 0))
    assert inside.mean() > 0.6 and (~inside).any() and runs.max() <= 31
    joined = street_axis(u, np.random.default_rng(0), (20, 30), (5, 8), p_joined=1.0)
    assert joined.inside.all() and len(np.unique(joined.index)) > 5


def test_mixed_draws_every_style_by_weight() -> None:
    rng = np.random.default_rng(0)
    counts = Counter(draw_style(STYLES, rng) for _ in range(4000))
    assert set(counts) == set(STYLES) and set(MIXED_WEIGHTS) == set(STYLES)
    total = sum(MIXED_WEIGHTS.values())
    for style, w in MIXED_WEIGHTS.items():
        assert abs(counts[style] / 4000 - w / total) < 0.03
    assert {draw_style(("highrise",), rng) for _ in range(5)} == {"highrise"}


def test_simulate_uses_new_styles() -> None:
    out = simulate_samples(SimConfig(size=16, frames=4, style="perimeter"), seed=0, start=0, count=2)
    assert (out["group"] == STYLES.index("perimeter")).all()
    np.testing.assert_array_equal(out["buildings"], out["heights"] > 1.5)
    mixed = simulate_samples(SimConfig(size=16, frames=2), seed=0, start=0, count=12)["group"]
    assert len(set(mixed.tolist())) > 3
