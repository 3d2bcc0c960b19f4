"""`tomoformer geometry import`: a store of tiles with heights, group and attributes; bad input exits 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("shapely")
pytest.importorskip("pyogrio")

from tests.geometry.conftest import PLAIN, SQUARE, feature, make_town, write_geojson
from tomoformer.cli import main
from tomoformer.geometry.store import open_geometry

SMALL = ["--cell-size-m", "2", "--tile", "16", "--stride", "8", "--rotations", "3", "--no-progress"]


@pytest.fixture
def footprint_file(tmp_path: Path) -> Path:
    return make_town(tmp_path)


def read(path: Path) -> dict[str, np.ndarray]:
    import zarr

    if path.suffix == ".npz":
        with np.load(path) as npz:
            return {k: npz[k] for k in ("buildings", "heights", "group")}
    group = zarr.open_group(str(path), mode="r")
    return {k: group[k][:] for k in ("buildings", "heights", "group")}


def test_import_writes_tiles_with_heights_group_and_attrs(tmp_path: Path, footprint_file: Path) -> None:
    other = write_geojson(tmp_path / "other.geojson", [feature(SQUARE, height=30), feature(PLAIN, height=9)])
    out = tmp_path / "tiles.zarr"
    assert main(["geometry", "import", str(footprint_file), str(other), "--out", str(out), *SMALL]) == 0
    tiles = open_geometry(out)
    arrays = read(out)
    n = len(tiles)
    assert n > 3 and arrays["heights"].shape == (n, 16, 16) and arrays["heights"].dtype == np.float32
    np.testing.assert_array_equal(arrays["buildings"], arrays["heights"] > 1.5)
    assert set(np.unique(arrays["group"])) == {0, 1}
    attrs = tiles.attrs
    assert attrs["kind"] == "geometry" and attrs["group_names"] == ["town", "other"]
    assert attrs["height_rules"]["town"] == {"height": 1, "levels": 1, "default": 1}
    assert attrs["height_rules"]["other"] == {"height": 2, "levels": 0, "default": 0}
    assert attrs["tiles_per_group"]["town"] + attrs["tiles_per_group"]["other"] == n
    assert len(attrs["tile_placements"]) == n and attrs["cell_size_m"] == 2.0
    # Source 1 holds only 30 m and 9 m buildings; source 0's heights are 12, 15 and a drawn default.
    assert set(np.unique(arrays["heights"][arrays["group"] == 1])) <= {0.0, 9.0, 30.0}
    assert {12.0, 15.0} <= set(np.unique(arrays["heights"][arrays["group"] == 0]))
    # Every tile has buildings above the receiver, and several rotations were used.
    assert arrays["buildings"].reshape(n, -1).any(axis=1).all()
    for group in (0, 1):
        assert len({p[3] for p in attrs["tile_placements"] if p[0] == group}) == 3
    assert not list(tmp_path.glob(".*partial*"))


def test_same_seed_same_tiles_in_every_format(tmp_path: Path, footprint_file: Path) -> None:
    for name, seed in (("a.zarr", "1"), ("b.npz", "1"), ("c.zarr", "2")):
        assert (
            main(["geometry", "import", str(footprint_file), "--out", str(tmp_path / name), *SMALL, "--seed", seed])
            == 0
        )
    a, b, c = (read(tmp_path / n) for n in ("a.zarr", "b.npz", "c.zarr"))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["heights"].shape != c["heights"].shape or not np.array_equal(a["heights"], c["heights"])


def write_tiny_pbf(path: Path) -> Path:
    """A one-building OpenStreetMap .osm.pbf (a 22 x 22 m block of 4 levels), written with osmium."""
    osmium = pytest.importorskip("osmium")
    from osmium.osm.mutable import Node, Way

    meta = {"version": 1, "timestamp": "2020-01-01T00:00:00Z", "changeset": 1, "uid": 1, "user": "t"}
    writer = osmium.SimpleWriter(str(path))
    corners = [(24.9400, 60.1700), (24.9404, 60.1700), (24.9404, 60.1702), (24.9400, 60.1702)]
    for i, lonlat in enumerate(corners, 1):
        writer.add_node(Node(id=i, location=lonlat, **meta))
    writer.add_way(Way(id=10, nodes=[1, 2, 3, 4, 1], tags={"building": "yes", "building:levels": "4"}, **meta))
    writer.close()
    return path


def test_osm_pbf_carries_the_odbl_attribution_and_overwrite(tmp_path: Path) -> None:
    pytest.importorskip("pyrosm")
    pbf = write_tiny_pbf(tmp_path / "tiny.osm.pbf")
    out = tmp_path / "t.zarr"
    args = ["geometry", "import", str(pbf), "--out", str(out), *SMALL, "--tile", "8", "--stride", "4"]
    assert main(args) == 0
    tiles = open_geometry(out)
    assert "OpenStreetMap contributors" in tiles.attrs["licence"] and "ODbL" in tiles.attrs["licence"]
    assert tiles.attrs["height_rules"]["tiny"] == {"height": 0, "levels": 1, "default": 0}
    assert set(np.unique(read(out)["heights"])) <= {0.0, 12.0}
    assert main(args) == 2  # exists
    assert main([*args, "--overwrite"]) == 0


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, footprint_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.zarr"
    base = ["geometry", "import", "--out", str(out), *SMALL]
    empty = write_geojson(tmp_path / "empty.geojson", [])
    one_line_error(capsys, [*base, str(empty)], "no buildings")
    bad = tmp_path / "broken.osm.pbf"
    bad.write_bytes(b"\x00\x00\x00\x0cnot an OSM file at all")
    one_line_error(capsys, [*base, str(bad)], "not a readable OSM PBF")
    one_line_error(capsys, [*base, str(footprint_file), "--crs", "EPSG:999999"], "--crs")
    one_line_error(capsys, [*base, str(footprint_file), "--bbox", "10,10,10.1,10.1"], "empty crop")
    one_line_error(capsys, [*base, str(footprint_file), "--min-built-fraction", "0.99"], "empty crop")
    one_line_error(capsys, [*base, str(footprint_file), "--tile", "1"], "--tile")
    one_line_error(capsys, [*base, str(footprint_file), "--default-height-m", "9"], "--default-height-m")
    one_line_error(capsys, [*base, str(tmp_path / "nothing.geojson")], "no such file")
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_scene_writes_a_mitsuba_scene_that_rasterises_back_to_the_tile(tmp_path: Path, footprint_file: Path) -> None:
    from tomoformer.sim.meshes import rasterise
    from tomoformer.sim.scenes import scene_meshes

    store = tmp_path / "t.zarr"
    assert main(["geometry", "import", str(footprint_file), "--out", str(store), *SMALL]) == 0
    out = tmp_path / "scene"
    argv = ["geometry", "scene", str(store), "--index", "1", "--out", str(out), "--material", "brick"]
    assert main([*argv, "--wall-thickness-m", "0.25"]) == 0
    text = (out / "scene.xml").read_text()
    assert 'value="brick"' in text and 'value="0.25"' in text
    buildings, ground = scene_meshes(out / "scene.xml")
    heights = open_geometry(store).tile(1)
    inside, top = rasterise(buildings, (0.0, 0.0), heights.shape, 2.0, z=1.5)
    np.testing.assert_array_equal(inside, heights > 1.5)
    np.testing.assert_allclose(top[inside], heights[inside])
    assert len(ground) == 1
    assert main([*argv, "--index", "999"]) == 2 and main([*argv, "--overwrite", "--material", "cheese"]) == 2


def test_missing_extra_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyogrio" else real(name, *a))
    assert main(["geometry", "import", str(tmp_path / "x.geojson"), "--out", str(tmp_path / "o.zarr")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pyogrio" in err[0] and "tomoformer[geo]" in err[0]
