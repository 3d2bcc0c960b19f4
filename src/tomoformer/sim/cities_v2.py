"""City generator v2: the morphologies of real city tiles, as building-height maps in metres.

* ``perimeter``: contiguous perimeter blocks with courtyards along a street grid at any angle, cut into
  parcels of different heights, some with lower rear wings, neighbouring blocks
  sometimes joined into one mass, plazas and parks (European city cores).
* ``irregular``: a warped Voronoi street network at every angle; blocks split into parcels by
  oriented-bounding-box subdivision, built along the streets to a random depth (old cores, courtyards).
* ``detached``: suburbs of ~100 m2 detached houses (and a few larger buildings), one per parcel, on a
  grid or on curving streets.
* ``highrise``: clusters of towers (35-160 m) on podiums in large blocks, with plazas; no terrain.
* ``openspace``: one of the above (or empty land) cut by a river with its embankments, a railway, a park
  or a plaza.

The first four also carry such open areas now and then. Lengths are drawn in metres and converted with
``cell_size_m``; every generator is whole-grid NumPy (a few ms at 100 x 100), no loop over buildings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from tomoformer.sim.citygeom import (
    band,
    blob,
    interior,
    obb_subdivide,
    region_moments,
    rotated_frame,
    street_axis,
    voronoi,
    warp,
)

V2_STYLES: tuple[str, ...] = ("perimeter", "irregular", "detached", "highrise", "openspace")


def perimeter(size: int, rng: np.random.Generator, cell: float) -> np.ndarray:
    """Perimeter blocks with courtyards on a gently bent street grid at a random angle. float32 [size, size] m."""
    m = 1.0 / cell
    uv = rotated_frame(size, rng.uniform(0, np.pi / 2), rng, rng.uniform(0, 4) * m, 150 * m)
    au = street_axis(uv[0], rng, (50 * m, 150 * m), (8 * m, 22 * m), p_joined=0.2)
    av = street_axis(uv[1], rng, (45 * m, 120 * m), (8 * m, 22 * m), p_joined=0.2)
    inside = au.inside & av.inside
    eu, ev = au.edge, av.edge
    edge = np.minimum(eu, ev)
    nv = len(av.length)
    block = au.index * nv + av.index
    nb = len(au.length) * nv
    depth = rng.uniform(11, 22, nb)[block] * m
    kind = rng.choice(4, size=nb, p=(0.78, 0.1, 0.06, 0.06))[block]  # ring, fully built, plaza, park
    base = rng.uniform(12, 26, nb)[block]
    # Parcels along each facade: a finer layout without streets cuts the block sides into lots 8-24 m long.
    lot_u = street_axis(uv[0], rng, (8 * m, 24 * m), (0.0, 0.0)).index
    lot_v = street_axis(uv[1], rng, (8 * m, 24 * m), (0.0, 0.0)).index
    on_u_side = eu < ev  # such a facade runs along v
    near_end = np.where(on_u_side, au.offset > au.length[au.index] / 2, av.offset > av.length[av.index] / 2)
    n_lots = int(max(lot_u.max(), lot_v.max())) + 1
    parcel = ((block * 4 + 2 * on_u_side + near_end) * n_lots + np.where(on_u_side, lot_v, lot_u)).ravel()
    _, parcel = np.unique(parcel, return_inverse=True)
    parcel = parcel.reshape(size, size)
    n_parcels = int(parcel.max()) + 1
    factor = rng.uniform(0.8, 1.2, n_parcels)[parcel]
    passage = (rng.random(n_parcels) < 0.02)[parcel]  # a missing house: the courtyard opens to the street
    # Rear wings: some parcels reach deeper into the courtyard, still joined to the street ring.
    wing = np.where(rng.random(n_parcels) < 0.35, rng.uniform(5, 20, n_parcels) * m, 0.0)[parcel]
    ring = inside & (((kind == 0) & (edge < depth + wing)) | (kind == 1)) & ~passage
    heights = np.where(ring, base * np.where(edge < depth, factor, 0.6 * factor), 0.0)
    return _open_areas(heights, rng, cell, p_river=0.06, p_rail=0.04, p_park=0.05)


def irregular(size: int, rng: np.random.Generator, cell: float) -> np.ndarray:
    """Warped Voronoi blocks at every angle, parcels by OBB subdivision, built to a depth from the street."""
    m = 1.0 / cell
    spacing = rng.uniform(50, 110) * m
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij")).astype(np.float64)
    ids, gap = voronoi(grid + warp(size, rng, 0.1 * spacing, 2.5 * spacing), spacing, rng)
    street = gap < rng.uniform(6, 14) * m
    parcels = np.maximum(obb_subdivide(ids, ~street, rng.uniform(120, 350) * m * m, 5 * m, rng), 0)
    to_street = ndimage.distance_transform_edt(~street)
    nb = int(ids.max()) + 1
    n_parcels = int(parcels.max()) + 1
    kind = rng.choice(3, size=nb, p=(0.86, 0.07, 0.07))[ids]  # built, plaza, park
    depth = rng.uniform(8, 16, nb)[ids] * m
    empty = (rng.random(n_parcels) < 0.03)[parcels]
    built = ~street & (kind == 0) & (to_street < depth) & ~empty
    heights = rng.uniform(8, 22, nb)[ids] * rng.uniform(0.8, 1.2, n_parcels)[parcels]
    return _open_areas(np.where(built, heights, 0.0), rng, cell, p_river=0.06, p_rail=0.03, p_park=0.05)


def detached(size: int, rng: np.random.Generator, cell: float) -> np.ndarray:
    """Detached houses of 60-150 m2 (about 100), one per 350-800 m2 parcel, on a grid or on curving streets."""
    m = 1.0 / cell
    if rng.random() < 0.5:  # long blocks with two rows of parcels
        uv = rotated_frame(size, rng.uniform(0, np.pi / 2), rng, rng.uniform(0, 6) * m, 150 * m)
        au = street_axis(uv[0], rng, (70 * m, 160 * m), (8 * m, 14 * m))
        av = street_axis(uv[1], rng, (35 * m, 60 * m), (8 * m, 14 * m))
        street = ~(au.inside & av.inside)
        regions = au.index * len(av.length) + av.index
    else:  # curving streets: strongly warped Voronoi quarters
        spacing = rng.uniform(60, 110) * m
        grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij")).astype(np.float64)
        regions, gap = voronoi(grid + warp(size, rng, 0.3 * spacing, 2.0 * spacing), spacing, rng)
        street = gap < rng.uniform(8, 13) * m
    # Mostly houses of 60-150 m2 on 300-900 m2 parcels; blocks of large parcels (1,200-2,500 m2) hold larger
    # buildings (barns, shops, small apartment blocks).
    big_block = rng.random(int(regions.max()) + 1) < 0.15
    target = np.where(big_block[regions], rng.uniform(1200, 2500), rng.uniform(300, 900)) * m * m
    parcels = obb_subdivide(regions, ~street, target, 10 * m, rng)
    rows, cols = np.nonzero(~street)
    lab = parcels[rows, cols]
    n_parcels = int(lab.max()) + 1 if lab.size else 0
    count, mr, mc, axis, _ = region_moments(lab, rows.astype(np.float64), cols.astype(np.float64), n_parcels)
    large = np.zeros(n_parcels, bool)
    large[lab] = big_block[regions[rows, cols]]
    long_side = np.where(large, rng.uniform(15, 28, n_parcels), rng.uniform(9, 15, n_parcels)) * m
    short_side = np.where(large, rng.uniform(10, 16, n_parcels), rng.uniform(7, 10, n_parcels)) * m
    # The long side of a house usually faces the street, i.e. lies across the parcel's long axis (which is
    # perpendicular to the street); a large building follows the parcel's long axis so that it fits.
    angle = (axis + ((rng.random(n_parcels) < 0.75) & ~large) * np.pi / 2)[lab]
    dr, dc = rows - mr[lab], cols - mc[lab]
    along = dr * np.cos(angle) + dc * np.sin(angle)
    across = -dr * np.sin(angle) + dc * np.cos(angle)
    occupied = (rng.random(n_parcels) >= rng.uniform(0.05, 0.5)) & (count >= 1.5 * long_side * short_side)
    house = (np.abs(along) < long_side[lab] / 2) & (np.abs(across) < short_side[lab] / 2) & occupied[lab]
    house &= interior(parcels)[rows, cols]  # a gap to the street and to the neighbours
    heights = np.zeros((size, size), np.float64)
    heights[rows[house], cols[house]] = rng.uniform(4, 9.5, n_parcels)[lab[house]]
    return _open_areas(heights, rng, cell, p_river=0.04, p_rail=0.03, p_park=0.06)


def highrise(size: int, rng: np.random.Generator, cell: float) -> np.ndarray:
    """Towers of 35-160 m, one or two per large block, often on a podium; plazas and mid-rise slabs between."""
    m = 1.0 / cell
    uv = rotated_frame(size, rng.uniform(0, np.pi / 2))
    au = street_axis(uv[0], rng, (60 * m, 130 * m), (14 * m, 30 * m))
    av = street_axis(uv[1], rng, (60 * m, 130 * m), (14 * m, 30 * m))
    nv = len(av.length)
    nb = len(au.length) * nv
    block = au.index * nv + av.index
    edge = np.minimum(au.edge, av.edge)
    kind = rng.choice(3, size=nb, p=(0.75, 0.12, 0.13))  # towers, plaza, mid-rise perimeter slab
    inside = au.inside & av.inside
    towers = inside & (kind == 0)[block]
    podium = towers & (rng.random(nb) < 0.5)[block] & (edge >= rng.uniform(0, 4, nb)[block] * m)
    heights = np.where(podium, rng.uniform(8, 16, nb)[block], 0.0)
    block_u = au.length[np.arange(nb) // nv]
    block_v = av.length[np.arange(nb) % nv]
    for t in range(2):
        wu = np.minimum(rng.uniform(16, 42, nb) * m, block_u)
        wv = np.minimum(rng.uniform(16, 42, nb) * m, block_v)
        cu = wu / 2 + rng.random(nb) * (block_u - wu)
        cv = wv / 2 + rng.random(nb) * (block_v - wv)
        present = np.ones(nb, bool) if t == 0 else rng.random(nb) < 0.5
        tower = (
            towers
            & present[block]
            & (np.abs(au.offset - cu[block]) < wu[block] / 2)
            & (np.abs(av.offset - cv[block]) < wv[block] / 2)
        )
        heights = np.where(tower, np.maximum(heights, rng.uniform(35, 160, nb)[block]), heights)
    slab = inside & (kind == 2)[block] & (edge < rng.uniform(12, 18, nb)[block] * m)
    heights = np.where(slab, rng.uniform(15, 30, nb)[block], heights)
    return _open_areas(heights, rng, cell, p_river=0.04, p_rail=0.03, p_park=0.05)


def openspace(size: int, rng: np.random.Generator, cell: float) -> np.ndarray:
    """A tile of one of the styles above with one or two large open areas (river, railway, park, plaza)."""
    base = int(rng.choice(len(_BASES) + 1, p=(0.36, 0.27, 0.18, 0.09, 0.1)))
    # The last choice is land without buildings (fields, water, rail yards): real tiles of coverage 0.
    heights = _BASES[base](size, rng, cell) if base < len(_BASES) else np.zeros((size, size), np.float32)
    for _ in range(1 + int(rng.random() < 0.4)):
        heights[_open_area(size, rng, cell, int(rng.choice(4, p=(0.35, 0.25, 0.25, 0.15))))] = 0.0
    return heights


def _open_area(size: int, rng: np.random.Generator, cell: float, kind: int) -> np.ndarray:
    """Bool [size, size] mask of one open area: 0 river with embankment roads, 1 railway, 2 park, 3 plaza."""
    m = 1.0 / cell
    if kind == 0:
        width = rng.uniform(25, 90) + 2 * rng.uniform(6, 14)
        return band(size, rng, width * m, rng.uniform(0, 30) * m)
    if kind == 1:
        return band(size, rng, rng.uniform(15, 45) * m)
    return blob(size, rng, (rng.uniform(30, 80) if kind == 2 else rng.uniform(15, 35)) * m)


def _open_areas(
    heights: np.ndarray, rng: np.random.Generator, cell: float, p_river: float, p_rail: float, p_park: float
) -> np.ndarray:
    """Clear a river, a railway and/or a park with the given probabilities; float32 heights."""
    for kind, p in enumerate((p_river, p_rail, p_park)):
        if rng.random() < p:
            heights[_open_area(heights.shape[0], rng, cell, kind)] = 0.0
    return heights.astype(np.float32)


_BASES: tuple[Callable[[int, np.random.Generator, float], np.ndarray], ...] = (perimeter, irregular, detached, highrise)
GENERATORS: dict[str, Callable[[int, np.random.Generator, float], np.ndarray]] = {
    "perimeter": perimeter,
    "irregular": irregular,
    "detached": detached,
    "highrise": highrise,
    "openspace": openspace,
}
