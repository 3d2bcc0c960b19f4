"""Procedural city layouts: building-height maps in metres for ten urban styles.

The first five (``dense``, ``suburban``, ``industrial``, ``oldtown``, ``open``) are here; the v2 styles that
look like real city tiles (perimeter blocks, irregular networks, detached houses, high-rise clusters, open
areas) are in :mod:`tomoformer.sim.cities_v2`. Every generator is O(H*W) numpy with a handful of Python
iterations, a few milliseconds at 100 x 100. Lengths are drawn in metres and converted with ``cell_size_m``
so a style looks the same at any resolution. Row 0 is north/top; cell (i, j) has its centre at (row=i, col=j).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tomoformer.sim.cities_v2 import GENERATORS
from tomoformer.sim.citygeom import voronoi as _voronoi
from tomoformer.sim.citygeom import warp as _warp
from tomoformer.sim.config import STYLES

# Grid styles: (block length m, street width m, lot length m, setback per side m, p(empty lot), height m)
_GRID_STYLES: dict[str, dict[str, tuple[float, float] | float]] = {
    "dense": dict(block=(30, 70), street=(8, 16), lot=(10, 25), setback=(0, 0.5), empty=0.08, height=(12, 40)),
    "suburban": dict(block=(40, 80), street=(6, 10), lot=(12, 20), setback=(2, 5), empty=0.15, height=(5, 10)),
    "industrial": dict(block=(50, 120), street=(10, 20), lot=(25, 60), setback=(2, 8), empty=0.2, height=(8, 15)),
}


# Draw probabilities of ``--style mixed``. Chosen (see the morphology table in docs/simulators.md) so that the
# mix spans every real source measured there: city cores (perimeter, irregular: courtyards, large masses),
# small towns (detached, open: coverage near 0, ~100 m2 masses) and the grid styles of v1.
MIXED_WEIGHTS: dict[str, float] = {
    "dense": 0.06,
    "suburban": 0.06,
    "industrial": 0.06,
    "oldtown": 0.08,
    "open": 0.04,
    "perimeter": 0.22,
    "irregular": 0.18,
    "detached": 0.12,
    "highrise": 0.06,
    "openspace": 0.12,
}
_MIXED_P = np.array([MIXED_WEIGHTS[s] for s in STYLES]) / sum(MIXED_WEIGHTS[s] for s in STYLES)


def draw_style(styles: tuple[str, ...], rng: np.random.Generator) -> str:
    """One style of ``styles``: MIXED_WEIGHTS when it is the full list (``--style mixed``), else uniform."""
    if tuple(styles) == STYLES:
        return STYLES[int(rng.choice(len(STYLES), p=_MIXED_P))]
    return styles[int(rng.integers(len(styles)))]


def make_city(style: str, size: int, rng: np.random.Generator, cell_size_m: float = 2.0) -> np.ndarray:
    """Building heights for one procedural tile.

    Returns float32 [size, size] in metres, 0 where there is no building.
    """
    if style in GENERATORS:
        return GENERATORS[style](size, rng, cell_size_m)
    if style in _GRID_STYLES:
        return _grid_city(size, rng, cell_size_m, **_GRID_STYLES[style])
    if style == "oldtown":
        return _oldtown(size, rng, cell_size_m)
    if style == "open":
        return _open(size, rng, cell_size_m)
    raise ValueError(f"unknown city style {style!r}; expected one of {STYLES}")


def _segments(n: int, rng: np.random.Generator, block: tuple, street: tuple, lot: tuple, cell: float):
    """1D layout along one axis: for each cell its lot index (-1 on streets) and the lot extents."""
    lot_of = np.full(n, -1, dtype=np.int64)
    starts, ends = [], []
    # Random phase so the map edge does not always start with a street.
    pos = -int(rng.uniform(0, block[1]) / cell)
    while pos < n:
        block_len = max(2, round(rng.uniform(*block) / cell))
        b0, b1 = pos, pos + block_len
        p = b0
        while p < b1:
            lot_len = max(1, round(rng.uniform(*lot) / cell))
            # Absorb a leftover sliver into the last lot instead of making a one-cell building.
            q = b1 if b1 - (p + lot_len) < max(1, lot_len // 3) else p + lot_len
            lo, hi = max(p, 0), min(q, n)
            if hi > lo:
                lot_of[lo:hi] = len(starts)
                starts.append(p)
                ends.append(q)
            p = q
        pos = b1 + max(1, round(rng.uniform(*street) / cell))
    return lot_of, np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)


def _grid_city(
    size: int,
    rng: np.random.Generator,
    cell: float,
    block: tuple,
    street: tuple,
    lot: tuple,
    setback: tuple,
    empty: float,
    height: tuple,
) -> np.ndarray:
    """Rectangular street grid; each block is cut into a lattice of lots, one building per lot."""
    r_lot, r0, r1 = _segments(size, rng, block, street, lot, cell)
    c_lot, c0, c1 = _segments(size, rng, block, street, lot, cell)
    nr, nc = max(len(r0), 1), max(len(c0), 1)
    sb = np.round(rng.uniform(*setback, size=(4, nr, nc)) / cell).astype(np.int64)
    h = rng.uniform(*height, size=(nr, nc)).astype(np.float32)
    h[rng.random((nr, nc)) < empty] = 0.0
    if len(r0) == 0 or len(c0) == 0:
        return np.zeros((size, size), np.float32)
    ri = np.clip(r_lot, 0, None)[:, None]
    ci = np.clip(c_lot, 0, None)[None, :]
    rows = np.arange(size)[:, None]
    cols = np.arange(size)[None, :]
    built = (
        (r_lot[:, None] >= 0)
        & (c_lot[None, :] >= 0)
        & (rows >= r0[ri] + sb[0, ri, ci])
        & (rows < r1[ri] - sb[1, ri, ci])
        & (cols >= c0[ci] + sb[2, ri, ci])
        & (cols < c1[ci] - sb[3, ri, ci])
    )
    return np.where(built, h[ri, ci], 0.0).astype(np.float32)


def _oldtown(size: int, rng: np.random.Generator, cell: float) -> np.ndarray:
    """Irregular old town: warped Voronoi quarters whose borders are narrow crooked streets."""
    rows, cols = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    quarter = rng.uniform(35, 60) / cell
    coords = np.stack([rows, cols]) + _warp(size, rng, 0.18 * quarter, 1.5 * quarter)
    _, gap = _voronoi(coords, quarter, rng)
    street_w = rng.uniform(3, 7) / cell
    lot_ids, _ = _voronoi(coords + _warp(size, rng, 1.0, 6.0), rng.uniform(8, 14) / cell, rng)
    n_lots = int(lot_ids.max()) + 1
    h = rng.uniform(8, 20, size=n_lots).astype(np.float32)
    h[rng.random(n_lots) < 0.07] = 0.0  # courtyards and small squares
    heights = h[lot_ids]
    heights[gap < street_w] = 0.0
    return heights.astype(np.float32)


def _open(size: int, rng: np.random.Generator, cell: float) -> np.ndarray:
    """Open land or park: a few small pavilions and sheds."""
    heights = np.zeros((size, size), np.float32)
    area_scale = (size * cell / 200.0) ** 2
    for _ in range(rng.poisson(5 * area_scale) + 1):
        hh, ww = np.maximum(1, np.round(rng.uniform(4, 12, size=2) / cell)).astype(int)
        r, c = rng.integers(-hh + 1, size), rng.integers(-ww + 1, size)
        heights[max(r, 0) : r + hh, max(c, 0) : c + ww] = rng.uniform(3, 8)
    return heights


def outdoor_component(heights: np.ndarray, rx_height_m: float) -> np.ndarray:
    """Boolean [H, W] mask of the largest 4-connected region of outdoor cells (the street network).

    Falls back to all outdoor cells, or to every cell if the tile is fully built.
    """
    outdoor = heights <= rx_height_m
    labels, n = ndimage.label(outdoor)
    if n == 0:
        return np.ones_like(outdoor)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


def street_walks(
    free: np.ndarray,
    n_walkers: int,
    n_steps: int | None,
    rng: np.random.Generator,
    target_cells: int | None = None,
    p_straight: float = 0.85,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Vectorised random walks on the ``free`` [H, W] mask, preferring to keep going straight.

    With ``n_steps`` returns positions int64 [n_walkers, n_steps + 1, 2] (one 4-neighbour step each).
    With ``target_cells`` instead walks until each walker visited that many distinct cells (or a step
    cap) and returns (final positions [n_walkers, 2], visited bool [n_walkers, H, W]).
    """
    H, W = free.shape
    # Positions are flat indices into the mask padded by one blocked cell, so that a step is one add and
    # the free-neighbour test one lookup (the loop runs for thousands of steps on tiny arrays).
    Wp = W + 2
    padded = np.pad(free, 1).ravel()
    dirs = np.array([-Wp, 1, Wp, -1])  # north, east, south, west
    cells = np.argwhere(free)
    start = cells[rng.integers(0, len(cells), size=n_walkers)]
    pos = (start[:, 0] + 1) * Wp + start[:, 1] + 1
    heading = rng.integers(0, 4, size=n_walkers)
    idx = np.arange(n_walkers)
    track = [pos]
    visited = None
    if target_cells is not None:
        target_cells = min(target_cells, int(free.sum()))
        visited = np.zeros((n_walkers, padded.size), bool)
        visited[idx, pos] = True
        count = np.ones(n_walkers, np.int64)
        n_steps = 40 * target_cells
    for _ in range(n_steps):
        nxt = pos[:, None] + dirs  # [n, 4]
        ok = padded[nxt]
        score = rng.random((n_walkers, 4))
        score[idx, heading] += (rng.random(n_walkers) < p_straight) * 2.0
        score[idx, (heading + 2) % 4] -= 1.5  # U-turns only at dead ends
        score[~ok] = -np.inf
        heading = np.argmax(score, axis=1)
        stuck = ~ok.any(axis=1)
        if visited is not None:
            stuck |= count >= target_cells
        pos = np.where(stuck, pos, nxt[idx, heading])
        if visited is None:
            track.append(pos)
            continue
        count += ~visited[idx, pos]
        visited[idx, pos] = True
        if (count >= target_cells).all():
            break

    def unpad(flat: np.ndarray) -> np.ndarray:
        return np.stack(np.divmod(flat, Wp), axis=-1) - 1

    if visited is None:
        return unpad(np.stack(track, axis=1)), None
    return unpad(pos), visited.reshape(n_walkers, H + 2, Wp)[:, 1:-1, 1:-1]
