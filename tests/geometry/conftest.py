"""Tiny footprint files built in the tests: a square, an L-shaped and a plain building near Helsinki."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("shapely")
pytest.importorskip("pyproj")
pytest.importorskip("pyogrio")
pytest.importorskip("geopandas")

LON0, LAT0 = 24.94, 60.17
# Outlines in metres east/north of (LON0, LAT0). The square lies north of the L, the plain box east of both.
SQUARE = [(0, 40), (20, 40), (20, 60), (0, 60)]  # 400 m2, height "12 m"
L_SHAPE = [(0, 0), (30, 0), (30, 15), (15, 15), (15, 30), (0, 30)]  # 675 m2, 5 levels
PLAIN = [(50, 0), (60, 0), (60, 10), (50, 10)]  # 100 m2, no height information
AREAS = {"square": 400.0, "l_shape": 675.0, "plain": 100.0}


def lonlat(points: list[tuple[float, float]]) -> list[list[float]]:
    """Metres around (LON0, LAT0) to closed lon/lat rings (azimuthal equidistant projection)."""
    from pyproj import Transformer

    local = f"+proj=aeqd +lat_0={LAT0} +lon_0={LON0} +datum=WGS84 +units=m"
    to_ll = Transformer.from_crs(local, "EPSG:4326", always_xy=True)
    ring = [list(to_ll.transform(x, y)) for x, y in points]
    return [*ring, ring[0]]


def feature(points: list[tuple[float, float]], **props: object) -> dict:
    return {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [lonlat(points)]}}


def write_geojson(path: Path, features: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return path


@pytest.fixture
def footprint_file(tmp_path: Path) -> Path:
    return make_town(tmp_path)


def make_town(tmp_path: Path) -> Path:
    """A GeoJSON with the three buildings (height / levels / nothing) and one point feature that is no building."""
    point = {
        "type": "Feature",
        "properties": {"name": "a bench"},
        "geometry": {"type": "Point", "coordinates": lonlat([(5, 5)])[0]},
    }
    return write_geojson(
        tmp_path / "town.geojson",
        [
            feature(SQUARE, name="square", height="12 m"),
            feature(L_SHAPE, name="l_shape", **{"building:levels": "5"}),
            feature(PLAIN, name="plain"),
            point,
        ],
    )
