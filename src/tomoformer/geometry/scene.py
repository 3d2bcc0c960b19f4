"""A Mitsuba scene of one tile of a geometry store, for Sionna RT (``tomoformer geometry scene``)."""

from __future__ import annotations

import os

import numpy as np

from tomoformer.errors import ConfigError, DataError
from tomoformer.geometry.store import open_geometry
from tomoformer.io import atomic_path
from tomoformer.outputs import claim_output
from tomoformer.sim.scenes import BUILDING_MATERIALS, ITU_MATERIALS, building_materials, write_city_scene


def write_tile_scene(
    store: str | os.PathLike[str],
    index: int,
    out: str | os.PathLike[str],
    material: str = "mixed",
    wall_thickness_m: float = 0.3,
    ground_margin_m: float = 0.0,
    seed: int = 0,
    overwrite: bool = False,
) -> tuple[int, int, float]:
    """Write the folder ``out`` (``scene.xml`` and meshes) for tile ``index`` of ``store``: buildings of ITU
    ``material`` (``mixed``: drawn per building with ``seed``) as slabs ``wall_thickness_m`` thick on a ground
    ``ground_margin_m`` metres wider than the tile. Returns the tile's (H, W) in cells and its cell size in metres."""
    if material != "mixed" and material not in ITU_MATERIALS:
        raise ConfigError(f"--material {material!r}: expected mixed or an ITU material: {', '.join(ITU_MATERIALS)}")
    if not 0 < wall_thickness_m < 10 or not 0 <= ground_margin_m < 1e5:
        raise ConfigError("--wall-thickness-m must be in (0, 10) and --ground-margin-m in [0, 1e5) metres")
    tiles = open_geometry(store)
    try:
        if not 0 <= index < len(tiles):
            raise DataError(f"{store}: --index {index} is out of range ({len(tiles)} tiles)")
        heights = tiles.tile(index)
        cell = float(tiles.attrs.get("cell_size_m", 2.0))
    finally:
        tiles.close()
    if material == "mixed":
        materials, names = building_materials(heights, np.random.default_rng(seed)), BUILDING_MATERIALS
    else:
        materials, names = np.zeros(heights.shape, int), (material,)
    claim = claim_output(out, overwrite=overwrite, command="geometry scene", inputs=(store,), whole=True)
    with claim, atomic_path(out) as tmp:
        tmp.mkdir()
        write_city_scene(tmp, heights, cell, materials, ground_margin_m, wall_thickness_m, names)
    H, W = heights.shape
    return H, W, cell
