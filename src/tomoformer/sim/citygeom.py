"""Raster geometry primitives of the procedural cities: warped and rotated frames, street axes, Voronoi
quarters, oriented-bounding-box parcel subdivision and open-area masks.

Everything works on whole [H, W] grids at once (no Python loop over cells, buildings or parcels), in cell
units; callers convert metres with ``cell_size_m``. Row 0 is north/top; cell (i, j) has its centre at
(row=i, col=j).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def warp(size: int, rng: np.random.Generator, amplitude: float, wavelength: float) -> np.ndarray:
    """Smooth random displacement field float64 [2, size, size] (a few random plane waves), in cells."""
    line = np.arange(size, dtype=np.float64)
    out = np.zeros((2, size, size), np.float64)
    for axis in range(2):
        for _ in range(3):
            k = rng.normal(size=2)
            k *= 2 * np.pi / (wavelength * rng.uniform(0.7, 1.5) * np.linalg.norm(k))
            # sin(a + b) = sin a cos b + cos a sin b: 4 * size sines instead of size**2.
            a = k[0] * line + rng.uniform(0, 2 * np.pi)
            b = k[1] * line
            out[axis] += np.outer(np.sin(a), np.cos(b)) + np.outer(np.cos(a), np.sin(b))
    return out * amplitude / np.sqrt(3)


def voronoi(coords: np.ndarray, spacing: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-seed labels int64 [H, W] on a jittered grid of seeds, and the gap d2 - d1 to the second nearest.

    ``coords`` is float [2, H, W] (row, col in cells, possibly warped). Only the 3x3 neighbouring seed cells
    are candidates, so it costs 9 distances per cell.
    """
    size = coords.shape[1]
    n = int(np.ceil((size + 2 * spacing) / spacing)) + 3
    # Jitter kept away from the cell borders: two near-coincident seeds would turn the whole region
    # between them into "border" (street).
    jitter = rng.uniform(0.2, 0.8, size=(2, n, n))
    seeds = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij")) - 1 + jitter) * spacing
    seed_r, seed_c = seeds[0].ravel(), seeds[1].ravel()
    base = np.floor(coords / spacing).astype(np.int64) + 1
    rows = [np.clip(base[0] + d, 0, n - 1) * n for d in (-1, 0, 1)]
    cols = [np.clip(base[1] + d, 0, n - 1) for d in (-1, 0, 1)]
    # Running nearest and second-nearest squared distances over the 9 candidates (cheaper than a partition).
    d1 = np.full(coords.shape[1:], np.inf)
    d2 = np.full(coords.shape[1:], np.inf)
    id1 = np.zeros(coords.shape[1:], np.int64)
    for gi in rows:
        for gj in cols:
            idx = gi + gj
            dr = coords[0] - seed_r[idx]
            dc = coords[1] - seed_c[idx]
            d = dr * dr + dc * dc
            closer = d < d1
            np.minimum(d2, d, out=d2)
            np.copyto(d2, d1, where=closer)
            np.copyto(d1, d, where=closer)
            np.copyto(id1, idx, where=closer)
    return id1, (np.sqrt(d2) - np.sqrt(d1)).astype(np.float32)


def rotated_frame(
    size: int, angle: float, rng: np.random.Generator | None = None, warp_cells: float = 0.0, wavelength: float = 40.0
) -> np.ndarray:
    """Coordinates float64 [2, size, size] (u, v) in cells of every cell in a frame rotated by ``angle`` radians.

    The origin is the tile centre; ``warp_cells`` > 0 bends the frame with a smooth random field first, so
    that straight streets of the rotated frame become gently curved ones.
    """
    rows, cols = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    xy = np.stack([rows, cols]) - (size - 1) / 2
    if warp_cells > 0 and rng is not None:
        xy = xy + warp(size, rng, warp_cells, wavelength)
    ca, sa = np.cos(angle), np.sin(angle)
    return np.stack([ca * xy[0] + sa * xy[1], -sa * xy[0] + ca * xy[1]])


@dataclass
class Axis:
    """Blocks and streets laid along one axis of a (rotated) frame, evaluated at every cell.

    ``index`` int64 [H, W] block number along the axis, ``offset`` float [H, W] distance (cells) from
    that block's start, ``inside`` bool [H, W] (False on the street after the block), ``length`` float [n]
    block lengths in cells.
    """

    index: np.ndarray
    offset: np.ndarray
    inside: np.ndarray
    length: np.ndarray

    @property
    def edge(self) -> np.ndarray:
        """Distance (cells) to the nearer end of the cell's block along this axis."""
        return np.minimum(self.offset, self.length[self.index] - self.offset)


def street_axis(
    u: np.ndarray,
    rng: np.random.Generator,
    block: tuple[float, float],
    street: tuple[float, float],
    p_joined: float = 0.0,
) -> Axis:
    """Random block lengths ``block`` and street widths ``street`` (cells, uniform ranges) along coordinate ``u``.

    The layout covers the whole range of ``u`` with a random phase, so a tile edge need not start with a street.
    With probability ``p_joined`` a street has width 0: its two blocks touch (one built mass, two courtyards).
    """
    lo, hi = float(u.min()), float(u.max())
    n = int((hi - lo) / max(block[0] + street[0], 1.0)) + 3
    length = rng.uniform(*block, size=n)
    gap = rng.uniform(*street, size=n)
    if p_joined > 0:
        gap[rng.random(n) < p_joined] = 0.0
    starts = lo - rng.uniform(0, block[1] + street[1]) + np.concatenate([[0.0], np.cumsum(length + gap)[:-1]])
    index = np.clip(np.searchsorted(starts, u, side="right") - 1, 0, n - 1)
    offset = u - starts[index]
    return Axis(index, offset, offset < length[index], length)


def region_moments(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Per-label cell count, centroid (row, col), principal-axis angle (radians) and variance along it.

    ``labels`` int [M] in [0, n) with the cells' ``rows`` and ``cols`` [M]; all outputs are [n].
    """
    count = np.bincount(labels, minlength=n).astype(np.float64)
    safe = np.maximum(count, 1)
    mr = np.bincount(labels, rows, n) / safe
    mc = np.bincount(labels, cols, n) / safe
    dr, dc = rows - mr[labels], cols - mc[labels]
    crr = np.bincount(labels, dr * dr, n) / safe
    ccc = np.bincount(labels, dc * dc, n) / safe
    crc = np.bincount(labels, dr * dc, n) / safe
    angle = 0.5 * np.arctan2(2 * crc, crr - ccc)  # direction (row, col) = (cos, sin) of the long axis
    major = 0.5 * (crr + ccc) + np.sqrt(0.25 * (crr - ccc) ** 2 + crc**2)
    return count, mr, mc, angle, major


def obb_subdivide(
    regions: np.ndarray,
    valid: np.ndarray,
    target_cells: float | np.ndarray,
    min_width_cells: float,
    rng: np.random.Generator,
    jitter: float = 0.2,
    max_levels: int = 10,
) -> np.ndarray:
    """Split every region into parcels by recursive cuts across its oriented bounding box's long axis.

    ``regions`` int [H, W] (>= 0 where ``valid``), ``target_cells`` the parcel area (cells) below which a parcel
    is not split (a scalar, or float [H, W] constant within each region), ``min_width_cells`` the smallest
    half-length along the long axis that may still be cut.
    The long axis and the extent come from the second moments of each parcel's cells (a raster OBB), and the cut
    lies at a random fraction 0.5 +- ``jitter`` of that extent. Returns int64 [H, W] parcel labels
    (compact, 0..P-1) and -1 outside ``valid``. All parcels of a level are cut at once (bincount, no loops).
    """
    rows, cols = np.nonzero(valid)
    _, lab = np.unique(regions[rows, cols], return_inverse=True)
    lab = lab.astype(np.int64)
    n = int(lab.max()) + 1 if lab.size else 0
    target = limit = None
    if np.ndim(target_cells):
        target = np.zeros(n, np.float64)
        target[lab] = np.asarray(target_cells, np.float64)[rows, cols]
    else:
        limit = float(target_cells)
    r, c = rows.astype(np.float64), cols.astype(np.float64)
    for _ in range(max_levels):
        if n == 0:
            break
        count, mr, mc, angle, major = region_moments(lab, r, c, n)
        half = np.sqrt(3 * major)  # half-extent along the long axis for a uniform bar
        area_limit = limit if target is None else target
        split = (count > area_limit) & (half >= min_width_cells)
        if not split.any():
            break
        cut = rng.uniform(-jitter, jitter, size=n) * 2 * half
        # Offset along the long axis, minus the cut: one lookup per cell of per-parcel constants.
        ca, sa = np.cos(angle), np.sin(angle)
        shift = mr * ca + mc * sa + cut
        side = (r * ca[lab] + c * sa[lab] > shift[lab]) & split[lab]
        # Children 2k and 2k + 1, renumbered compactly so that the bincounts stay small.
        present = np.bincount(2 * lab + side, minlength=2 * n) > 0
        lab = (np.cumsum(present) - 1)[2 * lab + side]
        if target is not None:
            target = np.repeat(target, 2)[present]
        n = int(present.sum())
    out = np.full(regions.shape, -1, np.int64)
    out[rows, cols] = lab
    return out


def interior(labels: np.ndarray) -> np.ndarray:
    """Bool [H, W]: cells whose 4 neighbours carry the same label (tile borders count as the same)."""
    same = np.ones(labels.shape, bool)
    same[1:] &= labels[1:] == labels[:-1]
    same[:-1] &= labels[:-1] == labels[1:]
    same[:, 1:] &= labels[:, 1:] == labels[:, :-1]
    same[:, :-1] &= labels[:, :-1] == labels[:, 1:]
    return same


def band(size: int, rng: np.random.Generator, width: float, meander: float = 0.0) -> np.ndarray:
    """Bool [size, size]: a band ``width`` cells wide across the tile at a random angle (river, railway).

    It passes within a quarter tile of the centre; ``meander`` > 0 adds a sinusoidal bend of that amplitude.
    """
    u, v = rotated_frame(size, rng.uniform(0, np.pi))
    v = v - rng.uniform(-0.25, 0.25) * size
    if meander > 0:
        v = v + meander * np.sin(2 * np.pi * u / (size * rng.uniform(0.8, 2.0)) + rng.uniform(0, 2 * np.pi))
    return np.abs(v) < width / 2


def blob(size: int, rng: np.random.Generator, radius: float) -> np.ndarray:
    """Bool [size, size]: a warped disc of about ``radius`` cells somewhere on the tile (park, square)."""
    centre = rng.uniform(0.15, 0.85, size=2) * (size - 1)
    coords = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij")).astype(np.float64)
    coords = coords + warp(size, rng, 0.25 * radius, 2.0 * radius)
    return np.hypot(coords[0] - centre[0], coords[1] - centre[1]) < radius
