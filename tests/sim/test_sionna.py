"""Ray-tracing support: mesh extrusion, PLY/XML scenes, rasterisation, dependency errors, and (with sionna-rt) a
tiny trace."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tomoformer.cli import main
from tomoformer.errors import ConfigError
from tomoformer.sim import sionna as sionna_module
from tomoformer.sim.config import SimConfig
from tomoformer.sim.meshes import TriangleMesh, extrude_heights, rasterise, read_ply, write_ply
from tomoformer.sim.scenes import BUILDING_MATERIALS, building_materials, scene_meshes, write_city_scene


def _toy_heights() -> np.ndarray:
    h = np.zeros((16, 16), np.float32)
    h[2:6, 3:9] = 10.0
    h[9:14, 9:12] = 20.0
    h[9:14, 12:14] = 5.0  # a lower annex touching the tall block: a wall from 5 m to 20 m between them
    h[0, 15] = 1.0  # lower than the receiver: a building, but not "at receiver height"
    return h


def _box(x0: float, y0: float, x1: float, y1: float, z0: float, z1: float) -> TriangleMesh:
    """A closed box (with floor) as 12 triangles, independent of the extrusion code."""
    v = np.array([[x, y, z] for z in (z0, z1) for y in (y0, y1) for x in (x0, x1)], np.float32)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [f for a, b, c, d in quads for f in ((a, b, c), (a, c, d))]
    return TriangleMesh(v, np.array(faces, np.int32))


def test_extrusion_rasterises_back_to_the_height_map():
    h = _toy_heights()
    meshes = extrude_heights(h, 2.0)
    inside, top = rasterise(meshes.values(), (0.0, 0.0), h.shape, 2.0, z=1.5)
    np.testing.assert_array_equal(inside, h > 1.5)
    np.testing.assert_allclose(top, np.where(h > 1.5, h, 1.5))
    # Same at 0.5 m: now the 1 m shed counts too.
    inside, _ = rasterise(meshes.values(), (0.0, 0.0), h.shape, 2.0, z=0.5)
    np.testing.assert_array_equal(inside, h > 0.5)


def test_extrusion_faces_point_outwards_and_walls_belong_to_the_taller_building():
    h = _toy_heights()
    materials = (h >= 20).astype(int)
    meshes = extrude_heights(h, 2.0, materials, origin=(100.0, -50.0))
    assert set(meshes) == {0, 1}
    for m, mesh in meshes.items():
        tri = mesh.vertices[mesh.faces].astype(np.float64)
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        centre = tri.mean(axis=1)
        # Just in front of each face we are outside the building (above it, or beside a lower neighbour).
        probe = centre + 0.1 * normal
        col = np.floor((probe[:, 0] - 100.0) / 2.0).astype(int)
        row = 15 - np.floor((probe[:, 1] + 50.0) / 2.0).astype(int)
        valid = (row >= 0) & (row < 16) & (col >= 0) & (col < 16)
        ground = np.zeros(len(probe))
        ground[valid] = h[row[valid], col[valid]]
        assert (probe[:, 2] > ground - 1e-6).all()
        behind = centre - 0.1 * normal
        col = np.floor((behind[:, 0] - 100.0) / 2.0).astype(int)
        row = 15 - np.floor((behind[:, 1] + 50.0) / 2.0).astype(int)
        # ... and just behind it we are inside a building of this face's material.
        assert (behind[:, 2] < h[row, col] + 1e-6).all()
        assert (materials[row, col] == m).all()
    # The tall block's top reaches 20 m; nothing of material 0 does.
    assert meshes[1].vertices[:, 2].max() == 20.0 and meshes[0].vertices[:, 2].max() == 10.0


def test_rasterise_known_boxes_including_overhangs_and_rotated_triangles():
    # A 10 m x 6 m tower, a bridge from 4 m to 8 m (receivers below it are outside), and a 1 m wall.
    tower = _box(4.0, 4.0, 14.0, 10.0, 0.0, 25.0)
    bridge = _box(16.0, 0.0, 20.0, 32.0, 4.0, 8.0)
    low = _box(24.0, 20.0, 30.0, 30.0, 0.0, 1.0)
    # The tower rotated by 30 degrees about a vertical axis through its centre.
    angle = np.deg2rad(30.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    turned = _box(4.0, 4.0, 14.0, 10.0, 0.0, 25.0)
    turned.vertices[:, :2] = (turned.vertices[:, :2] - [9.0, 7.0]) @ rot.T + [9.0, 7.0]
    H = W = 16
    x = (np.arange(W) + 0.5) * 2.0
    y = (H - np.arange(H) - 0.5) * 2.0
    X, Y = np.meshgrid(x, y)
    inside, top = rasterise([tower, bridge, low], (0.0, 0.0), (H, W), 2.0, z=1.5)
    expected = (X > 4) & (X < 14) & (Y > 4) & (Y < 10)
    np.testing.assert_array_equal(inside, expected)
    assert inside.sum() == 5 * 3
    np.testing.assert_allclose(top[expected], 25.0)
    np.testing.assert_allclose(top[(X > 16) & (X < 20)], 8.0)  # the bridge is above, but not enclosing
    inside, _ = rasterise([turned], (0.0, 0.0), (H, W), 2.0, z=1.5)
    local = np.stack([X - 9.0, Y - 7.0], -1) @ rot  # back to the box frame
    expected = (np.abs(local[..., 0]) < 5) & (np.abs(local[..., 1]) < 3)
    np.testing.assert_array_equal(inside, expected)


def test_city_scene_round_trips_through_ply_and_xml(tmp_path: Path):
    h = _toy_heights()
    materials = building_materials(h, np.random.default_rng(0))
    # One material per building: each distinct height gets one draw.
    for value in np.unique(h):
        assert len(np.unique(materials[h == value])) == 1
    xml = write_city_scene(tmp_path, h, 2.0, materials, ground_margin_m=10.0)
    text = xml.read_text()
    assert 'type="itu-radio-material"' in text
    for name in {BUILDING_MATERIALS[m] for m in np.unique(materials[h > 0])}:
        assert f'value="{name}"' in text
    buildings, terrain = scene_meshes(xml)
    assert len(terrain) == 1 and terrain[0].vertices[:, 2].max() == 0.0
    assert terrain[0].vertices[:, 0].min() == -10.0 and terrain[0].vertices[:, 0].max() == 42.0
    inside, _ = rasterise(buildings, (0.0, 0.0), h.shape, 2.0, z=1.5)
    np.testing.assert_array_equal(inside, h > 1.5)
    mesh = buildings[0]
    write_ply(tmp_path / "again.ply", mesh)
    back = read_ply(tmp_path / "again.ply")
    np.testing.assert_array_equal(back.faces, mesh.faces)
    np.testing.assert_array_equal(back.vertices, mesh.vertices)


def test_missing_sionna_is_a_one_line_config_error(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setenv("DRJIT_LIBLLVM_PATH", "/nonexistent/libLLVM.so.19.1")  # named first: it is the bigger fix
    monkeypatch.setitem(sys.modules, "mitsuba", None)  # "import mitsuba" now raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "tomoformer\[sionna\]"'):
        sionna_module.import_sionna("cpu")
    code = main(["simulate", "--engine", "sionna", "--out", str(tmp_path / "x.zarr"), "--n", "1", "--size", "8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "tomoformer[sionna]" in err[0]
    assert not (tmp_path / "x.zarr").exists()


def test_missing_llvm_is_a_config_error_naming_the_fix(monkeypatch):
    # Even without sionna-rt installed: the LLVM check comes before any import.
    monkeypatch.setattr(sionna_module, "_installed", lambda name: True)
    monkeypatch.setenv("DRJIT_LIBLLVM_PATH", "/nonexistent/libLLVM.so.19.1")
    with pytest.raises(ConfigError, match="apt-get install libllvm19"):
        sionna_module.import_sionna("cpu")
    monkeypatch.delenv("DRJIT_LIBLLVM_PATH")
    monkeypatch.setattr(sionna_module, "find_llvm", lambda: None)
    with pytest.raises(ConfigError, match="DRJIT_LIBLLVM_PATH"):
        sionna_module.import_sionna("cpu")


def _need_sionna() -> None:
    pytest.importorskip("sionna.rt")
    if not (sionna_module.find_llvm() or os.environ.get("DRJIT_LIBLLVM_PATH")):
        pytest.skip("no LLVM >= 19 for Dr.Jit's CPU backend")


def test_tiny_ray_trace_is_lower_inside_buildings():
    _need_sionna()
    h = np.zeros((16, 16), np.float32)
    h[4:12, 8:12] = 15.0
    tx = np.array([[8.0, 2.0, 10.0], [2.0, 14.0, 6.0]], np.float32)
    config = SimConfig(size=16, frames=2)
    gain = sionna_module.radio_maps(h, tx, config, sionna_module.RayOptions(samples_per_tx=20_000, max_depth=2))
    assert gain.shape == (2, 16, 16) and gain.dtype == np.float32
    outside, inside = gain[:, h == 0], gain[:, h > 0]
    assert np.isfinite(outside).mean() > 0.8
    assert np.nanmedian(inside) < np.nanmedian(outside) - 10
    # Near the transmitter the gain is close to free space: -FSPL at ~8.5 m is about -62 dB at 3.5 GHz.
    assert -70 < gain[0, 8, 2] < -55


def test_simulate_engine_sionna_writes_the_fast_simulator_format(tmp_path: Path):
    _need_sionna()
    from tomoformer.data.format import open_dataset, validate

    out = tmp_path / "rt.zarr"
    args = ["simulate", "--engine", "sionna", "--out", str(out), "--n", "2", "--size", "16", "--frames", "2"]
    assert main([*args, "--samples-per-tx", "10000", "--max-depth", "2", "--no-progress"]) == 0
    assert validate(out) == []
    with open_dataset(out) as ds:
        assert ds.attrs["source"] == "sionna-rt" and ds.attrs["ray_tracing"]["samples_per_tx"] == 10000
        assert set(ds.arrays) == {"signals", "buildings", "tx_pos", "group", "heights"}
        np.testing.assert_array_equal(ds.read("buildings", slice(None)), ds.read("heights", slice(None)) > 1.5)
