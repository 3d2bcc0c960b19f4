"""Scenes for the ray tracer: procedural cities written as Mitsuba XML + PLY, and tiles of Sionna's real cities.

Writing and reading scenes needs no Sionna: only the ray tracing itself (``tomoformer.sim.sionna``) does.
Coordinates follow ``tomoformer.sim.meshes`` (x east, y north, z up, metres; row 0 of a tile is north).
"""

from __future__ import annotations

import importlib.util
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from tomoformer.errors import ConfigError, DataError
from tomoformer.sim.meshes import (
    TriangleMesh,
    extrude_heights,
    ground_plane,
    heightfield,
    rasterise,
    read_ply,
    write_ply,
)

# ITU-R P.2040 materials Sionna knows by name, drawn per building with these probabilities.
BUILDING_MATERIALS: tuple[str, ...] = ("concrete", "brick", "glass")
MATERIAL_PROBS: tuple[float, ...] = (0.5, 0.35, 0.15)
GROUND_MATERIAL = "concrete"
# Every ITU-R P.2040 material name sionna-rt 2.x knows (sionna/rt/radio_materials/itu.py), for --material.
ITU_MATERIALS: tuple[str, ...] = (
    "concrete", "brick", "plasterboard", "wood", "glass", "clear_acrylic", "ceiling_board", "chipboard", "plywood",
    "marble", "floorboard", "vinyl_tile", "carpet_tile", "asphalt_concrete", "metal", "very_dry_ground",
    "medium_dry_ground", "wet_ground",
)  # fmt: skip
# The flat real-city scenes shipped with sionna-rt (name = folder and XML name in sionna/rt/scenes). Hilly
# san_francisco is left out: one horizontal measurement plane cannot follow its terrain.
REAL_SCENES: tuple[str, ...] = ("munich", "etoile", "florence")
_TERRAIN = re.compile(r"ground|terrain|plane", re.IGNORECASE)


def building_materials(heights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Material index int [H, W] into BUILDING_MATERIALS, one draw per building.

    Procedural lots have continuous random heights, so a distinct height value identifies a building.
    """
    values, inverse = np.unique(heights, return_inverse=True)
    draw = rng.choice(len(BUILDING_MATERIALS), size=len(values), p=MATERIAL_PROBS)
    return draw[inverse.reshape(heights.shape)]


def real_building_materials(
    heights: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[str, ...], dict[str, tuple[str, float]]]:
    """Per building (a distinct height value), a wall material and thickness drawn from real ranges
    (``tomoformer.sim.materials``: glass, brick, concrete, marble, metal), thickness rounded to 1 cm (glass,
    metal) or 5 cm. Returns (index int [H, W] into names, names, {name: (ITU material, thickness m)}), names like
    ``brick-0.25``. Walls and roof of a building share its material: diffraction needs their edges welded in one
    mesh."""
    from tomoformer.sim.materials import draw_wall

    values, inverse = np.unique(heights, return_inverse=True)
    keys = []
    for _ in values:
        material, thickness = draw_wall(rng)
        step = 0.01 if material in ("glass", "metal") else 0.05
        keys.append(f"{material}-{max(step, round(thickness / step) * step):.2f}")
    names = tuple(sorted(set(keys)))
    kinds = {name: (name.split("-")[0], float(name.split("-")[1])) for name in names}
    index = np.array([names.index(k) for k in keys], np.int64)
    return index[inverse.reshape(heights.shape)], names, kinds


def scene_xml(
    shapes: list[tuple[str, str, str]], thickness_m: float, kinds: dict[str, tuple[str, float]] | None = None
) -> str:
    """Mitsuba scene text: one ITU material per used name, one PLY shape per (id, filename, material).

    ``kinds`` maps a name to (ITU material, thickness m); names not in it are ITU materials of ``thickness_m``."""
    kinds = kinds or {}
    lines = ['<scene version="2.1.0">']
    for name in sorted({m for _, _, m in shapes}):
        itu, thickness = kinds.get(name, (name, thickness_m))
        lines += [
            f'  <bsdf type="itu-radio-material" id={quoteattr("mat-" + name)}>',
            f'    <string name="type" value={quoteattr(itu)}/>',
            f'    <float name="thickness" value="{thickness:g}"/>',
            "  </bsdf>",
        ]
    for shape_id, filename, material in shapes:
        lines += [
            f'  <shape type="ply" id={quoteattr(shape_id)}>',
            f'    <string name="filename" value={quoteattr(filename)}/>',
            '    <boolean name="face_normals" value="true"/>',
            f'    <ref id={quoteattr("mat-" + material)} name="bsdf"/>',
            "  </shape>",
        ]
    return "\n".join([*lines, "</scene>\n"])


def receiver_surface(ground: np.ndarray, cell: float, rx_height_m: float) -> TriangleMesh:
    """Measurement surface of a tile on terrain: for every cell of ``ground`` [H, W] metres (row-major from the
    north-west cell), two triangles splitting the cell's square at height ground + rx_height_m, facing up.
    Triangles 2k and 2k + 1 belong to cell k."""
    ground = np.asarray(ground, np.float64)
    H, W = ground.shape
    i, j = (a.reshape(-1) for a in np.meshgrid(np.arange(H), np.arange(W), indexing="ij"))
    x0, x1 = j * cell, (j + 1) * cell
    y1 = (H - i) * cell
    y0 = y1 - cell
    z = ground[i, j] + rx_height_m
    corners = np.stack(
        [np.stack([x0, y0, z], -1), np.stack([x1, y0, z], -1), np.stack([x1, y1, z], -1), np.stack([x0, y1, z], -1)],
        1,
    )  # [H W, 4, 3], counter-clockwise seen from above
    vertices = corners.reshape(-1, 3)
    base = 4 * np.arange(H * W)[:, None]
    faces = (base + np.array([0, 1, 2, 0, 2, 3])).reshape(-1, 3)
    return TriangleMesh(vertices.astype(np.float32), faces.astype(np.int32))


def write_city_scene(
    directory: Path,
    heights: np.ndarray,
    cell: float,
    materials: np.ndarray,
    ground_margin_m: float,
    thickness_m: float = 0.3,
    names: tuple[str, ...] = BUILDING_MATERIALS,
    kinds: dict[str, tuple[str, float]] | None = None,
    terrain: np.ndarray | None = None,
) -> Path:
    """Extrude ``heights`` [H, W] metres (tile south-west corner at the origin) into ``directory`` as PLY files
    plus ``scene.xml``; the ground plane reaches ``ground_margin_m`` beyond the tile on every side. ``materials``
    indexes ``names`` (ITU material names, or keys of ``kinds``: name -> (ITU material, thickness m)), per cell;
    walls and roofs of a building share its material.

    ``terrain`` (float [H + 2 m, W + 2 m] metres, the tile at offset m; ``tomoformer.sim.terrain``): the ground is
    that heightfield instead of a plane (it replaces ``ground_margin_m``), and every building stands on it (its
    walls reach down to the lowest ground around the tile, hidden below the surface)."""
    H, W = heights.shape
    shapes = []
    solid = np.asarray(heights, np.float64)
    if terrain is not None:
        m = (terrain.shape[0] - H) // 2
        local = np.asarray(terrain, np.float64)[m : m + H, m : m + W]
        # Absolute roofs over a base at the tile's lowest ground (open cells keep 0 = no building).
        base = float(local.min())
        solid = np.where(solid > 0, solid + local - base, 0.0)
    for index, mesh in extrude_heights(solid, cell, materials).items():
        name = names[index]
        if terrain is not None:
            mesh.vertices[:, 2] += base
        write_ply(directory / f"buildings-{name}.ply", mesh)
        shapes.append((f"buildings-{name}", f"buildings-{name}.ply", name))
    if terrain is None:
        m = ground_margin_m
        write_ply(directory / "ground.ply", ground_plane(-m, -m, W * cell + m, H * cell + m))
    else:
        m = (terrain.shape[0] - H) // 2
        write_ply(directory / "ground.ply", heightfield(terrain, cell, (-m * cell, -m * cell)))
    shapes.append(("ground", "ground.ply", GROUND_MATERIAL))
    path = directory / "scene.xml"
    path.write_text(scene_xml(shapes, thickness_m, kinds), encoding="utf-8")
    return path


@dataclass
class RealScene:
    """A shipped city: its XML, its building meshes (terrain excluded), ground level and footprint (metres)."""

    name: str
    xml: Path
    buildings: list[TriangleMesh]
    ground_z: float
    bounds: tuple[float, float, float, float]  # x0, y0, x1, y1 of the buildings


def scene_path(name: str) -> Path:
    """XML of one of Sionna's real-city scenes (found without importing Sionna, which picks a JIT backend)."""
    if name not in REAL_SCENES:
        raise ConfigError(f"unknown scene {name!r}; expected one of {', '.join(REAL_SCENES)}")
    try:
        spec = importlib.util.find_spec("sionna.rt")
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f'--scene {name} needs sionna-rt: pip install "tomoformer[sionna]"')
    path = Path(next(iter(spec.submodule_search_locations))) / "scenes" / name / f"{name}.xml"
    if not path.is_file():
        raise ConfigError(f"the installed sionna-rt has no scene {name!r} ({path} is missing)")
    return path


def scene_meshes(xml: Path) -> tuple[list[TriangleMesh], list[TriangleMesh]]:
    """(buildings, terrain) triangle meshes of a Mitsuba XML scene made of PLY shapes (Sionna's format).

    Shapes whose id looks like terrain ('ground', 'terrain', 'plane') go to the second list.
    """
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DataError(f"cannot read scene {xml}: {exc}") from exc
    buildings, terrain = [], []
    for shape in root.iter("shape"):
        if shape.get("type") != "ply":
            continue
        filename = next((s.get("value") for s in shape.iter("string") if s.get("name") == "filename"), None)
        if filename is None:
            continue
        mesh = read_ply(xml.parent / filename)
        (terrain if _TERRAIN.search(shape.get("id", "")) else buildings).append(mesh)
    return buildings, terrain


@lru_cache(maxsize=4)
def load_real_scene(name: str) -> RealScene:
    """Parse a shipped real-city scene once per process."""
    xml = scene_path(name)
    buildings, terrain = scene_meshes(xml)
    if not buildings:
        raise DataError(f"scene {name} has no building meshes")
    verts = np.concatenate([m.vertices for m in buildings])
    # Buildings stand on the ground: their lowest vertices are the ground level when there is no terrain mesh.
    ground_z = float(np.median(np.concatenate([m.vertices[:, 2] for m in terrain]))) if terrain else verts[:, 2].min()
    lo, hi = verts[:, :2].min(axis=0), verts[:, :2].max(axis=0)
    return RealScene(name, xml, buildings, ground_z, (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])))


def draw_tile(
    scene: RealScene,
    size: int,
    cell: float,
    rx_height_m: float,
    rng: np.random.Generator,
    min_built_fraction: float = 0.05,
    tries: int = 20,
) -> tuple[tuple[float, float], np.ndarray]:
    """A random size x size tile inside the scene's footprint with at least ``min_built_fraction`` built cells
    (the best of ``tries`` draws otherwise). Returns (south-west corner (x0, y0), heights float32 [size, size]
    metres above the ground, 0 outside buildings at receiver height)."""
    x0, y0, x1, y1 = scene.bounds
    span = size * cell
    best: tuple[float, tuple[float, float], np.ndarray] | None = None
    for _ in range(tries):
        # A scene narrower than the tile gets the tile centred on it.
        ox = rng.uniform(x0, x1 - span) if x1 - x0 > span else (x0 + x1 - span) / 2
        oy = rng.uniform(y0, y1 - span) if y1 - y0 > span else (y0 + y1 - span) / 2
        heights = tile_heights(scene, (ox, oy), size, cell, rx_height_m)
        built = float((heights > rx_height_m).mean())
        if best is None or built > best[0]:
            best = (built, (ox, oy), heights)
        if built >= min_built_fraction:
            break
    assert best is not None
    return best[1], best[2]


def tile_heights(
    scene: RealScene, origin: tuple[float, float], size: int, cell: float, rx_height_m: float
) -> np.ndarray:
    """Heights float32 [size, size] metres above ground of the buildings enclosing each cell centre at receiver
    height (0 elsewhere), rasterised from the scene's own triangles."""
    z = scene.ground_z + rx_height_m
    inside, top = rasterise(scene.buildings, origin, (size, size), cell, z)
    return np.where(inside, top - scene.ground_z, 0.0).astype(np.float32)
