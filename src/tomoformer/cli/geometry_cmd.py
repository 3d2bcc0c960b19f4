"""``tomoformer geometry import``: building footprints (OSM .osm.pbf, GeoPackage, GeoJSON) to height tiles."""

from __future__ import annotations

import argparse
from pathlib import Path

from tomoformer.cli.common import add_overwrite_flag
from tomoformer.errors import ConfigError


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("geometry", help="real building footprints to building-height tiles")
    sub = p.add_subparsers(dest="geometry_command", metavar="ACTION", required=True)
    q = sub.add_parser(
        "import",
        help="read footprints, rasterise them to tiles (buildings, heights, group; no signals)",
        description="Read building footprints (.osm.pbf via pyrosm; .gpkg, .geojson, .shp ... via pyogrio), take "
        "heights from 'height', else 'building:levels' x --metres-per-level, else a default drawn from "
        "--default-height-m, project them to metres and cut them into tiles at --rotations random angles and "
        "offsets. Then: tomoformer simulate --geometry OUT. Needs: pip install 'tomoformer[geo]'.",
    )
    q.add_argument("sources", nargs="+", metavar="SRC", help="footprint files; group = index of the file")
    q.add_argument("--out", required=True, help="output geometry store (.zarr, .npz, .h5)")
    q.add_argument("--cell-size-m", type=float, default=2.0)
    q.add_argument("--tile", type=int, default=100, help="tile side in cells")
    q.add_argument("--stride", type=int, default=50, help="cells between neighbouring tiles of one grid")
    q.add_argument("--rotations", type=int, default=4, help="tile grids: the first north-up, the others random")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--min-built-fraction", type=float, default=0.02, help="drop tiles with fewer built cells")
    q.add_argument("--rx-height-m", type=float, default=1.5, help="buildings = heights above this")
    q.add_argument("--default-height-m", default="6,15", metavar="LO,HI", help="range of drawn default heights")
    q.add_argument("--metres-per-level", type=float, default=3.0)
    q.add_argument("--layer", default=None, help="layer of a multi-layer file (default: the 'building' one)")
    q.add_argument("--crs", default=None, help="CRS of files that name none (or a wrong one), e.g. EPSG:25832")
    q.add_argument("--bbox", default=None, metavar="W,S,E,N", help="keep buildings in this lon/lat box")
    q.add_argument("--licence", default=None, help="licence/attribution of non-OSM sources, stored in the attrs")
    add_overwrite_flag(q)
    q.add_argument("--no-progress", dest="progress", action="store_false")
    q.set_defaults(handler=run_import)

    q = sub.add_parser(
        "scene",
        help="write one tile as a Mitsuba XML scene + PLY meshes for Sionna RT (no Blender)",
        description="Extrude tile INDEX of a geometry store (or any dataset with heights) to wall and roof meshes "
        "on a ground plane and write DIR/scene.xml (load it with sionna.rt.load_scene). The tile's south-west "
        "corner is at x = y = 0, x east, y north, z up, metres.",
    )
    q.add_argument("store", help="geometry store (tomoformer geometry import) or dataset with heights")
    q.add_argument("--index", type=int, default=0, help="tile index")
    q.add_argument("--out", required=True, help="output folder (scene.xml and .ply files)")
    q.add_argument("--material", default="concrete", help="ITU material of walls and roofs, or mixed (drawn)")
    q.add_argument("--wall-thickness-m", type=float, default=0.3, help="ITU slab thickness")
    q.add_argument("--ground-margin-m", type=float, default=50.0, help="ground plane beyond the tile")
    q.add_argument("--seed", type=int, default=0, help="draw of the materials with --material mixed")
    add_overwrite_flag(q)
    q.set_defaults(handler=run_scene)


def run_import(args: argparse.Namespace) -> int:
    from tomoformer.geometry import require_geo
    from tomoformer.geometry.store import ImportOptions, import_geometry
    from tomoformer.outputs import claim_output

    require_geo()
    out = Path(args.out)
    options = ImportOptions(
        cell_size_m=args.cell_size_m,
        tile=args.tile,
        stride=args.stride,
        rotations=args.rotations,
        seed=args.seed,
        min_built_fraction=args.min_built_fraction,
        rx_height_m=args.rx_height_m,
        default_height_m=_numbers(args.default_height_m, 2, "--default-height-m"),  # type: ignore[arg-type]
        metres_per_level=args.metres_per_level,
        layer=args.layer,
        crs=args.crs,
        bbox=_numbers(args.bbox, 4, "--bbox") if args.bbox else None,  # type: ignore[arg-type]
        licence=args.licence,
    )
    with claim_output(out, overwrite=args.overwrite, command="geometry import", inputs=args.sources):
        summary = import_geometry(args.sources, out, options, progress=args.progress)
    total = sum(summary.tiles.values())
    per = ", ".join(f"{name} {n}" for name, n in summary.tiles.items())
    rules = "; ".join(
        f"{name}: " + ", ".join(f"{rule} {count}" for rule, count in counts.items())
        for name, counts in summary.height_rules.items()
    )
    print(f"wrote {total} tiles to {out} in {summary.seconds:.1f} s ({per}); heights from {rules}")
    return 0


def run_scene(args: argparse.Namespace) -> int:
    from tomoformer.geometry.scene import write_tile_scene

    H, W, cell = write_tile_scene(
        args.store,
        args.index,
        args.out,
        material=args.material,
        wall_thickness_m=args.wall_thickness_m,
        ground_margin_m=args.ground_margin_m,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.out}/scene.xml: tile {args.index}, {H * cell:g} x {W * cell:g} m, {args.material} walls")
    return 0


def _numbers(text: str, count: int, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise ConfigError(f"{flag}: expected {count} comma-separated numbers, got {text!r}")
    return values
