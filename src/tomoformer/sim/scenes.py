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
from tomoformer.sim.meshes import TriangleMesh, extrude_heights, ground_plane, rasterise, read_ply, write_ply

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


def scene_xml(shapes: list[tuple[str, str, str]], thickness_m: float) -> str:
    """Mitsuba scene text: one ITU material per used name, one PLY shape per (id, filename, material)."""
    lines = ['<scene version="2.1.0">']
    for name in sorted({m for _, _, m in shapes}):
        lines += [
            f'  <bsdf type="itu-radio-material" id={quoteattr("mat-" + name)}>',
            f'    <string name="type" value={quoteattr(name)}/>',
            f'    <float name="thickness" value="{thickness_m:g}"/>',
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


def write_city_scene(
    directory: Path,
    heights: np.ndarray,
    cell: float,
    materials: np.ndarray,
    ground_margin_m: float,
    thickness_m: float = 0.3,
    names: tuple[str, ...] = BUILDING_MATERIALS,
) -> Path:
    """Extrude ``heights`` [H, W] metres (tile south-west corner at the origin) into ``directory`` as PLY files
    plus ``scene.xml``; the ground plane reaches ``ground_margin_m`` beyond the tile on every side. ``materials``
    indexes ``names`` (ITU material names), per cell; walls and roofs of a building share its material."""
    H, W = heights.shape
    shapes = []
    for index, mesh in extrude_heights(heights, cell, materials).items():
        name = names[index]
        write_ply(directory / f"buildings-{name}.ply", mesh)
        shapes.append((f"buildings-{name}", f"buildings-{name}.ply", name))
    m = ground_margin_m
    write_ply(directory / "ground.ply", ground_plane(-m, -m, W * cell + m, H * cell + m))
    shapes.append(("ground", "ground.ply", GROUND_MATERIAL))
    path = directory / "scene.xml"
    path.write_text(scene_xml(shapes, thickness_m), encoding="utf-8")
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
