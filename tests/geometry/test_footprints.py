"""Reading footprints: height rules, projection to metres, polygons only, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.geometry.conftest import AREAS, L_SHAPE, SQUARE, feature, write_geojson
from tomoformer.errors import ConfigError, DataError
from tomoformer.geometry.footprints import OSM_LICENCE, parse_height_m, parse_levels, read_footprints


@pytest.mark.parametrize(
    ("value", "metres"),
    [("12", 12.0), ("12.5 m", 12.5), ("12,5", 12.5), ("40 ft", 12.192), (7, 7.0), ("tall", None), (None, None),
     ("-3", None), (float("nan"), None)],
)  # fmt: skip
def test_parse_height(value: object, metres: float | None) -> None:
    got = parse_height_m(value)
    assert got == pytest.approx(metres) if metres is not None else got is None


def test_parse_levels() -> None:
    assert parse_levels("4") == 4 and parse_levels("3.5") == 3.5
    assert parse_levels("0") is None and parse_levels("many") is None and parse_levels(None) is None


def test_heights_rules_and_areas_in_metres(footprint_file: Path) -> None:
    fp = read_footprints(footprint_file, default_height_m=(20.0, 30.0), seed=3)
    names = ["square", "l_shape", "plain"]  # the point feature is dropped
    assert len(fp.polygons) == 3
    np.testing.assert_allclose(fp.heights[:2], [12.0, 15.0])
    assert 20.0 <= fp.heights[2] <= 30.0
    assert fp.rules.tolist() == [0, 1, 2]
    assert fp.rule_counts() == {"height": 1, "levels": 1, "default": 1}
    areas = [poly.area for poly in fp.polygons]
    np.testing.assert_allclose(areas, [AREAS[n] for n in names], rtol=1e-3)
    assert "+proj=aeqd" in fp.crs and fp.licence.startswith("unknown")
    # Same seed, same drawn default; another seed, another one.
    assert read_footprints(footprint_file, default_height_m=(20.0, 30.0), seed=3).heights[2] == fp.heights[2]
    assert read_footprints(footprint_file, default_height_m=(20.0, 30.0), seed=4).heights[2] != fp.heights[2]


def test_osm_licence_for_pbf_and_given_licence(footprint_file: Path) -> None:
    assert "ODbL" in OSM_LICENCE
    assert read_footprints(footprint_file, licence="CC-BY 4.0 City of X").licence == "CC-BY 4.0 City of X"


def test_bbox_keeps_intersecting_buildings(footprint_file: Path) -> None:
    fp = read_footprints(footprint_file)
    lon0, lat0 = 24.94, 60.17
    # A box around the L only (its south-west corner is at (LON0, LAT0)).
    sub = read_footprints(footprint_file, bbox=(lon0 - 1e-4, lat0 - 1e-4, lon0 + 1e-4, lat0 + 1e-4))
    assert len(fp.polygons) == 3 and len(sub.polygons) == 1
    with pytest.raises(DataError, match="empty crop"):
        read_footprints(footprint_file, bbox=(10.0, 10.0, 10.1, 10.1))


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no buildings"):
        read_footprints(write_geojson(tmp_path / "empty.geojson", []))
    with pytest.raises(ConfigError, match="unknown footprint format"):
        read_footprints(tmp_path / "x.csv")
    with pytest.raises(DataError, match="no such file"):
        read_footprints(tmp_path / "missing.gpkg")
    bad = tmp_path / "bad.osm.pbf"
    bad.write_bytes(b"this is not protobuf" * 10)
    with pytest.raises(DataError, match="not a readable OSM PBF"):
        read_footprints(bad)


def test_projected_coordinates_in_a_lonlat_file_are_refused(tmp_path: Path) -> None:
    f = feature(SQUARE)
    f["geometry"]["coordinates"] = [[[x + 385000.0, y + 6672000.0] for x, y in [*SQUARE, SQUARE[0]]]]
    with pytest.raises(DataError, match="not longitude/latitude"):
        read_footprints(write_geojson(tmp_path / "utm.geojson", [f]))
    # Told the real CRS, the same file reads (EPSG:3067 is Finland's TM35FIN, metres).
    fp = read_footprints(tmp_path / "utm.geojson", crs="EPSG:3067")
    assert fp.polygons[0].area == pytest.approx(400.0, rel=1e-3)


@pytest.mark.filterwarnings("ignore:.crs. was not provided")
def test_geopackage_without_crs_and_layer_choice(tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import Polygon

    frame = gpd.GeoDataFrame({"height": [9.0, 6.0]}, geometry=[Polygon(SQUARE), Polygon(L_SHAPE)], crs=None)
    path = tmp_path / "nocrs.gpkg"
    frame.to_file(path, layer="buildings", driver="GPKG")
    with pytest.raises(DataError, match="unknown CRS"):
        read_footprints(path)
    with pytest.raises(ConfigError, match="--crs"):
        read_footprints(path, crs="EPSG:999999")
    fp = read_footprints(path, crs="EPSG:3067")
    assert fp.heights.tolist() == [9.0, 6.0] and fp.rule_counts()["height"] == 2
    frame.set_crs(3067).to_file(path, layer="roads", driver="GPKG")  # a second layer: "buildings" is still chosen
    assert len(read_footprints(path, crs="EPSG:3067").polygons) == 2
    with pytest.raises(ConfigError, match="no layer"):
        read_footprints(path, layer="parks", crs="EPSG:3067")
