"""Rasterising footprints: areas, heights, orientation (row 0 = north), rotations, tile plans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.geometry.conftest import AREAS
from tomoformer.geometry.footprints import read_footprints
from tomoformer.geometry.rasterise import Placement, Rasteriser, cell_centres


@pytest.fixture
def rasteriser(footprint_file: Path) -> Rasteriser:
    return Rasteriser(read_footprints(footprint_file, default_height_m=(20.0, 30.0)))


def test_cell_centres_rotate_about_the_tile_centre() -> None:
    x, y = cell_centres(Placement(100.0, -50.0, 0.0), 4, 2.0)
    np.testing.assert_allclose(x[0], [97, 99, 101, 103])
    np.testing.assert_allclose(y[:, 0], [-47, -49, -51, -53])  # row 0 is north
    x90, y90 = cell_centres(Placement(100.0, -50.0, 90.0), 4, 2.0)
    np.testing.assert_allclose(x90[:, 0], [97, 99, 101, 103], atol=1e-9)  # columns now point north
    np.testing.assert_allclose(y90[0], [-53, -51, -49, -47], atol=1e-9)


def test_areas_heights_and_north_up(rasteriser: Rasteriser) -> None:
    fp = rasteriser.footprints
    centre = fp.polygons[0].union(fp.polygons[1]).union(fp.polygons[2]).envelope.centroid
    tile = rasteriser.tile(Placement(centre.x, centre.y, 0.0), 64, 1.0)  # 64 m: holds all three
    for k, name in enumerate(["square", "l_shape", "plain"]):
        cells = int(np.count_nonzero(tile == fp.heights[k]))
        # Cell centres in or out of an edge: the count is the area to within half the perimeter.
        assert abs(cells - AREAS[name]) <= 0.5 * fp.polygons[k].length + 1, name
    rows_square = np.nonzero((tile == 12.0).any(axis=1))[0]
    rows_l = np.nonzero((tile == 15.0).any(axis=1))[0]
    assert rows_square.max() < rows_l.min()  # the square lies north of the L: smaller rows
    cols_plain = np.nonzero((tile == fp.heights[2]).any(axis=0))[0]
    assert cols_plain.min() > np.nonzero((tile == 15.0).any(axis=0))[0].max()  # the plain box is east


def test_rotations_keep_areas_and_quarter_turns_are_exact(rasteriser: Rasteriser) -> None:
    fp = rasteriser.footprints
    c = fp.polygons[1].centroid
    base = rasteriser.tile(Placement(c.x, c.y, 0.0), 140, 1.0)  # 140 m: holds all three at any angle
    quarter = rasteriser.tile(Placement(c.x, c.y, 90.0), 140, 1.0)
    np.testing.assert_array_equal(quarter, np.rot90(base, -1))
    total = sum(AREAS.values())
    slack = 0.5 * sum(poly.length for poly in fp.polygons)
    for angle in (0.0, 17.0, 45.0, 211.0):
        turned = rasteriser.tile(Placement(c.x, c.y, angle), 140, 1.0)
        assert abs(np.count_nonzero(turned) - total) <= slack, angle
        assert set(np.unique(turned)) == set(np.unique(base))


def test_overlapping_footprints_take_the_tallest(tmp_path: Path) -> None:
    from tests.geometry.conftest import SQUARE, feature, write_geojson

    podium = [(-10, 30), (30, 30), (30, 70), (-10, 70)]
    path = write_geojson(tmp_path / "o.geojson", [feature(podium, height=6), feature(SQUARE, height=40)])
    r = Rasteriser(read_footprints(path))
    c = r.footprints.polygons[1].centroid
    tile = r.tile(Placement(c.x, c.y, 0.0), 50, 1.0)
    assert tile[25, 25] == 40.0 and set(np.unique(tile)) == {0.0, 6.0, 40.0}


def test_plan_is_seeded_and_first_grid_is_north_up(rasteriser: Rasteriser) -> None:
    a = rasteriser.plan(20, 2.0, 10, 3, np.random.default_rng(5))
    b = rasteriser.plan(20, 2.0, 10, 3, np.random.default_rng(5))
    c = rasteriser.plan(20, 2.0, 10, 3, np.random.default_rng(6))
    assert a == b and a != c
    angles = sorted({p.angle_deg for p in a})
    assert angles[0] == 0.0 and len(angles) == 3
    for p in a:  # every tile centre lies in the convex hull of the footprints
        assert rasteriser.hull.buffer(1e-6).contains(__import__("shapely").Point(p.x, p.y))
