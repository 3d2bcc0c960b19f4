"""Transmitter layouts of the fast simulator (SimConfig.tx_layout, tx_mode "random").

Positions are float32 [T, 3]: row, col in cells (sub-cell jitter; may lie outside the grid) and height in metres
above the local ground. "random" (the historical layout) lives in ``tomoformer.sim.simulate.sample_tx``.
"""

from __future__ import annotations

import math

import numpy as np

# Street-level transmitters (a person, a car, a small cell on a lamp post) and the height above a roof.
STREET_HEIGHT_M = (1.5, 3.0)
ROOFTOP_ABOVE_M = (1.0, 3.0)


def outdoor_positions(heights: np.ndarray, rx_height_m: float, T: int, rng: np.random.Generator) -> np.ndarray:
    """T outdoor cells of the tile (cells no taller than the receiver) plus sub-cell jitter: float [T, 2]."""
    outdoor = np.argwhere(heights <= rx_height_m)
    if len(outdoor) == 0:  # fully built tile
        outdoor = np.argwhere(np.ones_like(heights, dtype=bool))
    cells = outdoor[rng.integers(0, len(outdoor), size=T)]
    return cells + rng.uniform(-0.5, 0.5, size=(T, 2))


def ring_positions(n: int, width_cells: float, T: int, rng: np.random.Generator) -> np.ndarray:
    """T points on a ring around the tile: radius from the tile centre in [R, R + width_cells] with R one cell
    beyond the circumscribed circle of the grid, so every point lies outside it. float [T, 2]."""
    centre = (n - 1) / 2
    inner = (n - 1) / math.sqrt(2) + 1.0
    angle = rng.uniform(0, 2 * math.pi, size=T)
    radius = rng.uniform(inner, inner + width_cells, size=T)
    return np.stack([centre + radius * np.sin(angle), centre + radius * np.cos(angle)], axis=1)


def rooftop_positions(heights: np.ndarray, rx_height_m: float, T: int, rng: np.random.Generator) -> np.ndarray | None:
    """T transmitters on roofs, float [T, 3]: a building cell (taller than the receiver), its centre, and a height
    1-3 m above its roof. None when the tile has no building."""
    roofs = np.argwhere(heights > rx_height_m)
    if len(roofs) == 0:
        return None
    cells = roofs[rng.integers(0, len(roofs), size=T)]
    above = rng.uniform(*ROOFTOP_ABOVE_M, size=T)
    return np.concatenate([cells.astype(np.float64), (heights[cells[:, 0], cells[:, 1]] + above)[:, None]], axis=1)


def layout_positions(
    layout: str,
    heights: np.ndarray,
    rx_height_m: float,
    T: int,
    height_range_m: tuple[float, float],
    ring_width_cells: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Positions float32 [T, 3] of layout "inside", "ring", "rooftop" or "street" (see SimConfig.tx_layout).

    ``height_range_m`` is the height range of "inside" and "ring"; "street" uses STREET_HEIGHT_M and "rooftop"
    the roof plus ROOFTOP_ABOVE_M (on a tile without buildings, rooftop falls back to street level).
    """
    n = heights.shape[0]
    pos = np.empty((T, 3), np.float32)
    if layout == "rooftop":
        roof = rooftop_positions(heights, rx_height_m, T, rng)
        if roof is not None:
            pos[:] = roof
            return pos
        layout = "street"
    if layout == "ring":
        pos[:, :2] = ring_positions(n, ring_width_cells, T, rng)
    elif layout in ("inside", "street"):
        pos[:, :2] = outdoor_positions(heights, rx_height_m, T, rng)
    else:
        raise ValueError(f"unknown transmitter layout {layout!r}")
    lo, hi = STREET_HEIGHT_M if layout == "street" else height_range_m
    pos[:, 2] = rng.uniform(lo, hi, size=T)
    return pos
