"""Building footprints from OpenStreetMap ``.osm.pbf`` (pyrosm), GeoPackage, GeoJSON and other OGR vector files
(pyogrio), with a height per building and the rule that gave it, projected to metres around the data.

Heights: the ``height`` tag/column (metres; "12 m", "40 ft" understood), else ``building:levels`` x
``metres_per_level``, else a default drawn uniformly per building from ``default_height_m`` (seeded). The
projection is an azimuthal equidistant CRS centred on the data (distances from its centre are true, and a 2 km
city is flat to < 0.01 %), x east, y north, metres.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.errors import ConfigError, DataError
from tomoformer.geometry import require_geo

# How each building's height was found, in this order of preference (index = code stored per building).
HEIGHT_RULES: tuple[str, ...] = ("height", "levels", "default")
MAX_BUILDING_HEIGHT_M = 1000.0  # the tallest building is 828 m: a larger height is a unit or typing error
OSM_LICENCE = "© OpenStreetMap contributors, ODbL 1.0 (https://www.openstreetmap.org/copyright)"
OGR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite")
_LEVEL_COLUMNS = ("building:levels", "building_levels", "levels")
_HEIGHT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(m|meters?|metres?|ft|feet|')?\s*$", re.IGNORECASE)


@dataclass
class Footprints:
    """Footprints of one source in a local metric CRS: polygons (shapely, x east / y north metres), heights
    float32 [B] metres, rules int8 [B] (index into HEIGHT_RULES)."""

    name: str
    path: Path
    polygons: np.ndarray
    heights: np.ndarray
    rules: np.ndarray
    crs: str
    centre_lonlat: tuple[float, float]
    licence: str

    def rule_counts(self) -> dict[str, int]:
        """Number of buildings per height rule, e.g. {"height": 17, "levels": 168, "default": 301}."""
        return {rule: int(np.count_nonzero(self.rules == k)) for k, rule in enumerate(HEIGHT_RULES)}


def source_kind(path: Path) -> str:
    """``osm`` for ``.pbf`` files, ``ogr`` for the vector formats GDAL reads; ConfigError otherwise."""
    name = path.name.lower()
    if name.endswith(".pbf"):
        return "osm"
    if name.endswith(OGR_SUFFIXES):
        return "ogr"
    raise ConfigError(f"{path}: unknown footprint format; use .osm.pbf or one of {', '.join(OGR_SUFFIXES)}")


def read_footprints(
    path: str | Path,
    *,
    layer: str | None = None,
    crs: str | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    default_height_m: tuple[float, float] = (6.0, 15.0),
    metres_per_level: float = 3.0,
    licence: str | None = None,
    seed: int = 0,
) -> Footprints:
    """Read the building footprints of ``path`` (see the module docstring).

    ``crs`` sets the CRS of a file that has none (or overrides it); ``bbox`` (min lon, min lat, max lon, max lat)
    keeps only buildings that intersect it. Raises DataError/ConfigError with one line naming the file.
    """
    require_geo()
    path = Path(path)
    kind = source_kind(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    frame = _read_osm(path, bbox) if kind == "osm" else _read_ogr(path, layer, crs)
    frame = _buildings_only(path, frame)
    frame = _to_lonlat(path, frame)
    if bbox is not None:
        from shapely.geometry import box

        frame = frame[frame.intersects(box(*bbox))]
        if frame.empty:
            raise DataError(f"{path}: no buildings inside --bbox {','.join(f'{v:g}' for v in bbox)} (empty crop)")
    lon0, lat0, lon1, lat1 = (float(v) for v in frame.total_bounds)
    centre = ((lon0 + lon1) / 2, (lat0 + lat1) / 2)
    local = f"+proj=aeqd +lat_0={centre[1]:.7f} +lon_0={centre[0]:.7f} +datum=WGS84 +units=m +no_defs"
    projected = frame.to_crs(local)
    polygons = np.asarray(projected.geometry.values, dtype=object)
    heights, rules = _heights(frame, default_height_m, metres_per_level, np.random.default_rng(seed))
    absurd = np.flatnonzero(~(heights <= MAX_BUILDING_HEIGHT_M))
    if absurd.size:
        k = int(absurd[0])
        rule = HEIGHT_RULES[int(rules[k])]
        raise DataError(
            f"{path}: building {k} has a height of {float(heights[k]):g} m (from its {rule}), beyond "
            f"{MAX_BUILDING_HEIGHT_M:g} m{f' ({absurd.size} such buildings)' if absurd.size > 1 else ''}; fix the "
            "source or drop those buildings"
        )
    if licence is None:
        licence = OSM_LICENCE if kind == "osm" else "unknown (not given with --licence)"
    return Footprints(_stem(path), path, polygons, heights, rules, local, centre, licence)


def parse_height_m(value: Any) -> float | None:
    """Metres from an OSM-style height value ("12", "12.5 m", "40 ft", 12.0); None if absent or unreadable."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value) if value > 0 else None
    match = _HEIGHT.match(str(value).replace(",", "."))
    if not match:
        return None
    number = float(match.group(1))
    unit = (match.group(2) or "m").lower()
    metres = number * 0.3048 if unit in ("ft", "feet", "'") else number
    return metres if metres > 0 else None


def parse_levels(value: Any) -> float | None:
    """Number of storeys from ``building:levels`` ("4", "3.5", 4); None if absent, unreadable or not positive."""
    if value is None:
        return None
    try:
        levels = float(str(value).replace(",", ".").strip())
    except ValueError:
        return None
    return levels if np.isfinite(levels) and levels > 0 else None


# --------------------------------------------------------------------------------------------- readers


def _read_osm(path: Path, bbox: tuple[float, float, float, float] | None) -> Any:
    import geopandas as gpd

    try:
        from pyrosm import OSM
    except ImportError:
        from tomoformer.geometry import GEO_HINT

        raise ConfigError(f"reading .osm.pbf needs pyrosm: {GEO_HINT}") from None
    try:
        # pyrosm warns about relations cut by --bbox and empty areas: our own lines say what matters.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            osm = OSM(str(path), bounding_box=list(bbox) if bbox is not None else None)
            frame = osm.get_buildings()
    except Exception as err:  # pyrosm raises its own, OSError, ValueError, struct errors... for bad files
        raise DataError(f"{path}: not a readable OSM PBF file ({_short(err)})") from None
    if frame is None or len(frame) == 0:
        where = " inside --bbox (empty crop)" if bbox is not None else ""
        raise DataError(f"{path}: no buildings found{where}")
    if frame.crs is None:  # pyrosm always gives WGS84 longitude/latitude
        frame = frame.set_crs(4326)
    return gpd.GeoDataFrame(frame)


def _read_ogr(path: Path, layer: str | None, crs: str | None) -> Any:
    import pyogrio

    try:
        layers = [(str(name), str(geom)) for name, geom in pyogrio.list_layers(path)]
    except Exception as err:
        raise DataError(f"{path}: not a readable vector file ({_short(err)})") from None
    layer = _pick_layer(path, layers, layer)
    try:
        frame = pyogrio.read_dataframe(path, layer=layer)
    except Exception as err:
        raise DataError(f"{path}: cannot read layer {layer!r} ({_short(err)})") from None
    if crs is not None:
        try:
            frame = frame.set_crs(crs, allow_override=True)
        except Exception as err:
            raise ConfigError(f"--crs {crs}: not a coordinate reference system pyproj knows ({_short(err)})") from None
    elif frame.crs is None:
        raise DataError(f"{path}: unknown CRS (the file names none); give it with --crs, e.g. --crs EPSG:25832")
    return frame


def _pick_layer(path: Path, layers: list[tuple[str, str]], layer: str | None) -> str:
    names = [name for name, _ in layers]
    if layer is not None:
        if layer not in names:
            raise ConfigError(f"{path}: no layer {layer!r}; layers: {', '.join(names)}")
        return layer
    if len(layers) == 1:
        return names[0]
    building = [name for name in names if "building" in name.lower()]
    polygons = [name for name, geom in layers if "polygon" in geom.lower()]
    choice = building or polygons
    if len(choice) == 1:
        return choice[0]
    raise ConfigError(f"{path}: several layers ({', '.join(names)}); choose one with --layer")


def _buildings_only(path: Path, frame: Any) -> Any:
    """Non-empty (multi)polygons, repaired where invalid; rows tagged ``building=no`` dropped."""
    import shapely

    if len(frame) == 0:
        raise DataError(f"{path}: no buildings found (the file has no features)")
    geometry = np.asarray(frame.geometry.values, dtype=object)
    # Polygon (3) and MultiPolygon (6); points and lines (addresses, outlines of nothing) are not buildings.
    keep = np.isin(shapely.get_type_id(geometry), (3, 6)) & ~shapely.is_empty(geometry)
    if "building" in frame.columns:
        keep &= frame["building"].astype(str).str.lower().ne("no").to_numpy()
    frame = frame[keep].copy()
    if frame.empty:
        raise DataError(f"{path}: no buildings found (no polygon features)")
    frame.geometry = shapely.make_valid(np.asarray(frame.geometry.values, dtype=object))
    return frame


def _to_lonlat(path: Path, frame: Any) -> Any:
    """The frame in EPSG:4326, refusing coordinates that cannot be longitude/latitude."""
    if frame.crs.is_geographic:
        x0, y0, x1, y1 = frame.total_bounds
        if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
            raise DataError(
                f"{path}: coordinates ({x0:.6g}..{x1:.6g}, {y0:.6g}..{y1:.6g}) are not longitude/latitude although "
                f"the CRS ({frame.crs.to_string()}) says so; give the real one with --crs"
            )
    try:
        out = frame.to_crs(4326)
    except Exception as err:
        raise DataError(f"{path}: cannot project from {frame.crs.to_string()} ({_short(err)})") from None
    bounds = out.total_bounds
    if not np.isfinite(bounds).all():
        raise DataError(f"{path}: coordinates do not project to longitude/latitude; check the CRS or give --crs")
    return out


def _heights(
    frame: Any, default_height_m: tuple[float, float], metres_per_level: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(heights float32 [B] metres, rules int8 [B]); defaults drawn for every building so the draw is stable."""
    n = len(frame)
    lo, hi = default_height_m
    drawn = rng.uniform(lo, hi, size=n)
    given = [parse_height_m(v) for v in frame["height"]] if "height" in frame.columns else [None] * n
    column = next((c for c in _LEVEL_COLUMNS if c in frame.columns), None)
    levels = [parse_levels(v) for v in frame[column]] if column else [None] * n
    heights = np.empty(n, np.float32)
    rules = np.empty(n, np.int8)
    for k in range(n):
        if given[k] is not None:
            heights[k], rules[k] = given[k], 0
        elif levels[k] is not None:
            heights[k], rules[k] = levels[k] * metres_per_level, 1
        else:
            heights[k], rules[k] = drawn[k], 2
    return heights, rules


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".osm.pbf", ".pbf", *OGR_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{type(err).__name__}: {text[:200]}"
