"""Urban morphology: known rasters give known numbers; generated courtyards are found; the CLI action."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tomoformer.cli import main
from tomoformer.data.format import write_dataset
from tomoformer.evaluation.morphology import MorphologySummary, dataset_morphology, edge_orientation, tile_morphology
from tomoformer.sim.cities import make_city
from tomoformer.sim.citygeom import rotated_frame

CELL = 2.0  # m; a cell is 4 m2


def known_raster() -> np.ndarray:
    """16 x 16: a 7x7 ring around a 3x3 courtyard (36 m2), a 3x3 block around a 1-cell pocket (4 m2, too small
    for a courtyard), and two pieces touching only at a corner (one 8-connected mass of 6 cells)."""
    b = np.zeros((16, 16), bool)
    b[2:9, 2:9] = True
    b[4:7, 4:7] = False
    b[11:14, 2:5] = True
    b[12, 3] = False
    b[11:13, 10:12] = True
    b[13, 12:14] = True
    return b


def test_known_raster_gives_known_numbers() -> None:
    m = tile_morphology(known_raster(), CELL)
    assert m.coverage == pytest.approx((40 + 8 + 6) / 256)
    np.testing.assert_allclose(np.sort(m.mass_areas_m2), [24.0, 32.0, 160.0])
    assert m.courtyard_count == 1
    assert m.courtyard_share == pytest.approx(9 / 256)
    # Street = open cells connected to the border: every outer wall cell is one cell (2 m) from it, the inner
    # wall of the ring two cells; neither the courtyard nor the pocket counts as a street.
    d = m.street_distance_m
    assert d.size == 54 and (d == 2.0).sum() == 38 and (d == 4.0).sum() == 16
    assert min(m.grid_angle_deg, 90 - m.grid_angle_deg) < 1.0


def test_empty_and_full_tiles() -> None:
    empty = tile_morphology(np.zeros((8, 8), bool), CELL)
    assert empty.coverage == 0 and empty.mass_areas_m2.size == 0 and empty.courtyard_count == 0
    assert np.isnan(empty.orientation_spread_deg) and empty.street_distance_m.size == 0
    full = tile_morphology(np.ones((8, 8), bool), CELL)
    assert full.coverage == 1 and full.mass_areas_m2.tolist() == [256.0] and full.street_distance_m.size == 0


def test_edge_orientation_finds_grid_angle_and_spread() -> None:
    uv = rotated_frame(64, np.radians(30))
    grid = (np.mod(uv[0], 20) < 12) & (np.mod(uv[1], 20) < 12)
    spread, angle = edge_orientation(grid)
    assert min(abs(angle - 30), abs(angle - 60)) < 3 and spread < 15
    # Discs have edges in every direction.
    rows, cols = np.mgrid[:64, :64]
    discs = np.hypot(np.mod(rows, 32) - 16, np.mod(cols, 32) - 16) < 10
    assert edge_orientation(discs)[0] > 30


def test_generated_courtyards_are_detected() -> None:
    rng = np.random.default_rng(0)
    perimeter = [tile_morphology(make_city("perimeter", 100, rng, CELL) > 1.5, CELL) for _ in range(8)]
    detached = [tile_morphology(make_city("detached", 100, rng, CELL) > 1.5, CELL) for _ in range(4)]
    assert sum(t.courtyard_count for t in perimeter) > 0
    assert sum(t.courtyard_share for t in perimeter) > 0
    assert all(t.courtyard_count == 0 for t in detached)
    # Detached houses are ~100 m2 masses; perimeter blocks are masses of thousands of m2.
    houses = MorphologySummary.from_tiles("d", CELL, detached).stats()
    blocks = MorphologySummary.from_tiles("p", CELL, perimeter).stats()
    assert 50 <= houses["mass_area_median_m2"] <= 160 < 1000 < blocks["mass_area_p90_m2"]


def write_known(path: Path, with_buildings: bool = True) -> Path:
    b = known_raster()
    buildings = np.stack([b, np.zeros_like(b), b]).astype(np.uint8)
    arrays = {
        "signals": np.full((3, 4, 16, 16), -80.0, np.float32),
        "group": np.array([0, 1, 0], np.int16),
    }
    if with_buildings:
        arrays["buildings"] = buildings
    return write_dataset(path, arrays, {"cell_size_m": CELL, "group_names": ["city", "field"]})


def test_dataset_morphology_pools_and_groups(tmp_path: Path) -> None:
    path = write_known(tmp_path / "k.npz")
    (whole,) = dataset_morphology(path)
    stats = whole.stats()
    assert stats["tiles"] == 3 and stats["masses"] == 6
    assert stats["coverage_min"] == 0 and stats["coverage_max"] == pytest.approx(54 / 256)
    assert stats["courtyard_share"] == pytest.approx(2 * 9 / 256 / 3)
    city, field = dataset_morphology(path, by_group=True)
    assert city.name.endswith("[city]") and len(city.coverage) == 2
    assert field.name.endswith("[field]") and field.stats()["masses"] == 0


def test_cli_table_json_figure_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_known(tmp_path / "k.zarr")
    out_json, out_png = tmp_path / "m.json", tmp_path / "m.png"
    assert main(["data", "morphology", str(path), str(path), "--json", str(out_json), "--figure", str(out_png)]) == 0
    text = capsys.readouterr().out
    assert "0.21 (0.00-0.21)" in text and "32 / 160" in text
    doc = json.loads(out_json.read_text())
    assert len(doc["datasets"]) == 2 and doc["datasets"][0]["per_tile"]["courtyard_count"] == [1, 0, 1]
    assert doc["datasets"][0]["per_tile"]["grid_angle_deg"][1] is None  # NaN becomes null
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    # An existing output without --overwrite, a dataset without buildings: one line, exit 2, nothing written.
    capsys.readouterr()
    assert main(["data", "morphology", str(path), "--json", str(out_json)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    bare = write_known(tmp_path / "bare.npz", with_buildings=False)
    assert main(["data", "morphology", str(bare), "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "buildings" in err[0] and not (tmp_path / "x.json").exists()


def test_geometry_store_without_signals_is_measured_from_heights(tmp_path: Path) -> None:
    """``tomoformer geometry import`` writes heights but no signals: buildings are the cells above the receiver."""
    heights = np.where(known_raster(), 9.0, 0.0).astype(np.float32)
    heights[0, 0] = 1.0  # lower than the receiver (1.5 m): not a building
    path = write_dataset(
        tmp_path / "g.npz",
        {"heights": heights[None], "group": np.zeros(1, np.int16)},
        {"cell_size_m": CELL, "kind": "geometry"},
    )
    (summary,) = dataset_morphology(path)
    assert summary.coverage.tolist() == [pytest.approx(54 / 256)]
    assert summary.courtyard_count.tolist() == [1]
