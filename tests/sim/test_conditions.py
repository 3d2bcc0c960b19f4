"""Simulated conditions: transmitter layouts, terrain and ITU wall materials (fast simulator)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tomoformer.errors import ConfigError
from tomoformer.sim import SimConfig, prepare, simulate_samples
from tomoformer.sim.layouts import ROOFTOP_ABOVE_M, STREET_HEIGHT_M
from tomoformer.sim.materials import WALL_MATERIALS, WALL_THICKNESS_M, slab_loss_db
from tomoformer.sim.physics import draw_physics, fixed_physics
from tomoformer.sim.terrain import knife_edge_db, make_terrain, terrain_margin

SMALL = {"size": 24, "frames": 6}


def _sim(seed: int = 1, count: int = 2, **kw: object) -> dict[str, np.ndarray]:
    return simulate_samples(SimConfig(**SMALL, **kw), seed, 0, count)


@pytest.mark.parametrize("layout", ["random", "inside", "ring", "rooftop", "street"])
def test_layout_shapes_and_determinism(layout: str) -> None:
    a = _sim(tx_layout=layout)
    assert a["signals"].shape == (2, 6, 24, 24) and a["tx_pos"].shape == (2, 6, 3)
    assert np.isfinite(a["signals"]).any()
    # Sample 1 alone (another start, another count) is the same as sample 1 of the batch.
    b = simulate_samples(SimConfig(**SMALL, tx_layout=layout), 1, 1, 1)
    np.testing.assert_array_equal(a["tx_pos"][1], b["tx_pos"][0])
    np.testing.assert_allclose(a["signals"][1], b["signals"][0], rtol=0, atol=1e-4)


def test_batched_terrain_matches_one_by_one() -> None:
    config = SimConfig(**SMALL, tx_layout="ring", terrain_max_m=60.0, wall_material="itu")
    one = simulate_samples(config, 2, 0, 3, batched=False)
    batch = simulate_samples(config, 2, 0, 3, batched=True)
    np.testing.assert_allclose(one["signals"], batch["signals"], rtol=0, atol=1e-3)


def test_ring_transmitters_lie_outside_the_grid() -> None:
    out = _sim(count=3, tx_layout="ring", tx_outside_max_cells=10.0)
    rc = out["tx_pos"][..., :2]
    outside = (rc < -0.5) | (rc > 24 - 0.5)
    assert outside.any(axis=-1).all()
    centre = 23 / 2
    radius = np.hypot(rc[..., 0] - centre, rc[..., 1] - centre)
    assert radius.min() >= 23 / math.sqrt(2) and radius.max() <= 23 / math.sqrt(2) + 11.0


def test_rooftop_transmitters_stand_on_buildings_at_roof_height() -> None:
    out = _sim(count=3, tx_layout="rooftop", style="dense")
    for heights, tx in zip(out["heights"], out["tx_pos"], strict=True):
        rows, cols = tx[:, 0].astype(int), tx[:, 1].astype(int)
        roof = heights[rows, cols]
        assert (roof > 1.5).all()  # on a building
        above = tx[:, 2] - roof
        assert (above >= ROOFTOP_ABOVE_M[0] - 1e-4).all() and (above <= ROOFTOP_ABOVE_M[1] + 1e-4).all()


def test_street_and_inside_transmitters_are_outdoors_in_the_tile() -> None:
    for layout in ("street", "inside"):
        out = _sim(count=3, tx_layout=layout, style="dense")
        for heights, tx in zip(out["heights"], out["tx_pos"], strict=True):
            rc = np.round(tx[:, :2]).astype(int)
            assert ((rc >= 0) & (rc < 24)).all()
            assert (heights[rc[:, 0], rc[:, 1]] <= 1.5).all()
            if layout == "street":
                assert (tx[:, 2] >= STREET_HEIGHT_M[0]).all() and (tx[:, 2] <= STREET_HEIGHT_M[1]).all()


def test_default_layout_and_flat_terrain_change_nothing() -> None:
    base = _sim()
    flat = _sim(tx_layout="random", terrain_max_m=0.0, wall_material="range")
    np.testing.assert_array_equal(base["signals"], flat["signals"])


def test_terrain_changes_the_maps_but_not_the_city_and_is_deterministic() -> None:
    base = _sim(style="suburban")
    hills = _sim(style="suburban", terrain_max_m=80.0, terrain_scale_m=30.0)
    again = _sim(style="suburban", terrain_max_m=80.0, terrain_scale_m=30.0)
    np.testing.assert_array_equal(base["heights"], hills["heights"])
    np.testing.assert_array_equal(base["tx_pos"], hills["tx_pos"])
    np.testing.assert_array_equal(hills["signals"], again["signals"])
    diff = np.abs(hills["signals"] - base["signals"])
    assert np.nanmax(diff) > 3.0  # hills shadow some cells by several dB
    sample = prepare(SimConfig(**SMALL, terrain_max_m=80.0), 1, 0)
    assert sample.terrain is not None
    assert sample.terrain.shape == (24 + 2 * sample.terrain_margin,) * 2
    assert sample.terrain.min() == 0.0 and abs(float(sample.terrain.max()) - 80.0) < 1e-3


def test_terrain_margin_covers_the_ring() -> None:
    n, width = 24, 10.0
    margin = terrain_margin(n, width)
    assert (n - 1) / 2 + (n - 1) / math.sqrt(2) + 1 + width <= n - 1 + margin


def test_make_terrain_is_smooth_and_seeded() -> None:
    a = make_terrain(40, 5, 50.0, 8.0, np.random.default_rng(0))
    b = make_terrain(40, 5, 50.0, 8.0, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.diff(a, axis=0)).max() < 0.25 * 50.0  # no cliffs between neighbouring cells
    assert not make_terrain(40, 5, 0.0, 8.0, np.random.default_rng(0)).any()


def test_knife_edge_loss_follows_itu_p526() -> None:
    v = torch.tensor([-2.0, -0.78, 0.0, 1.0, 3.0])
    loss = knife_edge_db(v)
    assert loss[0] == 0 and loss[1] == 0
    assert abs(float(loss[2]) - 6.0) < 0.1  # grazing: ~6 dB
    assert abs(float(loss[3]) - 13.9) < 0.2 and abs(float(loss[4]) - 22.4) < 0.1


def test_hill_between_transmitter_and_receiver_costs_diffraction_loss() -> None:
    from tomoformer.sim.propagation import path_gain_and_loss_db

    config = SimConfig(
        size=40,
        frames=1,
        wall_loss_db=10.0,
        indoor_loss_db_per_m=0.0,
        roof_loss_db=None,
        canyon_probability=0.0,
        shadowing_std_db=0.0,
        noise_std_db=0.0,
    )
    heights = torch.zeros(1, 40, 40)
    tx = torch.tensor([[[20.0, 2.0, 3.0]]])
    margin = 4
    ground = torch.zeros(1, 48, 48)
    ground[:, :, margin + 18 : margin + 22] = 30.0  # a 30 m ridge across the tile, columns 18-21
    flat, _ = path_gain_and_loss_db(heights, tx, config, with_loss=False)
    ridge, _ = path_gain_and_loss_db(heights, tx, config, with_loss=False, terrain=(ground, margin))
    behind = (flat - ridge)[0, 0, 15:25, 30:]
    before = (flat - ridge)[0, 0, 15:25, 3:12]
    assert behind.min() > 15.0  # deep shadow behind the ridge
    assert before.abs().max() < 1.0  # nothing changes in front of it


def test_itu_walls_draw_real_materials() -> None:
    config = SimConfig(**SMALL, wall_material="itu")
    lows = {m: slab_loss_db(m, WALL_THICKNESS_M[m][0], config.frequency_hz) for m in WALL_MATERIALS}
    highs = {m: slab_loss_db(m, WALL_THICKNESS_M[m][1], config.frequency_hz) for m in WALL_MATERIALS}
    walls = [draw_physics(config, np.random.default_rng(i)).wall_loss_db for i in range(200)]
    assert all(any(lows[m] - 1e-9 <= w <= highs[m] + 1e-9 for m in WALL_MATERIALS) for w in walls)
    assert min(walls) < 3.0 and max(walls) >= 20.0  # glass and concrete/metal both occur
    assert slab_loss_db("concrete", 0.3, 3.5e9) > slab_loss_db("brick", 0.3, 3.5e9) > slab_loss_db("glass", 0.01, 3.5e9)
    with pytest.raises(ValueError, match="itu"):
        fixed_physics(config)
    itu = _sim(wall_material="itu")
    assert not np.array_equal(itu["signals"], _sim()["signals"])


@pytest.mark.parametrize(
    ("key", "value"),
    [("tx_layout", "sky"), ("terrain_max_m", -1.0), ("terrain_scale_m", 0.0), ("wall_material", "wood")],
)
def test_bad_condition_options_are_config_errors(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        SimConfig.from_dict({key: value})


def test_scene_writer_real_materials_per_building(tmp_path) -> None:
    from tomoformer.sim.scenes import real_building_materials, write_city_scene

    heights = np.zeros((12, 12), np.float32)
    for k in range(6):  # six buildings of distinct heights
        heights[2 * k : 2 * k + 2, 1:5] = 5.0 + k
    index, names, kinds = real_building_materials(heights, np.random.default_rng(3))
    for k in range(6):
        block = index[2 * k : 2 * k + 2, 1:5]
        assert (block == block[0, 0]).all()  # one material per building
    for name in names:
        material, thickness = kinds[name]
        lo, hi = WALL_THICKNESS_M[material]
        assert material in WALL_MATERIALS and lo - 0.05 <= thickness <= hi + 0.05
    xml = write_city_scene(tmp_path, heights, 2.0, index, 4.0, 0.3, names, kinds).read_text()
    for name in names:
        material, thickness = kinds[name]
        assert f'id="mat-{name}"' in xml and f'value="{material}"' in xml and f'value="{thickness:g}"' in xml


def test_scene_writer_terrain_ground_and_buildings_on_it(tmp_path) -> None:
    from tomoformer.sim.meshes import read_ply
    from tomoformer.sim.scenes import receiver_surface, write_city_scene

    heights = np.zeros((8, 8), np.float32)
    heights[2:4, 2:4] = 10.0
    margin = 3
    ground = np.tile(np.linspace(0.0, 7.0, 14, dtype=np.float32), (14, 1))  # rising eastwards, 0.5 m per cell
    write_city_scene(tmp_path, heights, 2.0, np.zeros((8, 8), int), 0.0, terrain=ground)
    terrain_mesh = read_ply(tmp_path / "ground.ply")
    assert len(terrain_mesh.faces) == 2 * 13 * 13
    assert terrain_mesh.vertices[:, 2].min() == 0.0 and abs(terrain_mesh.vertices[:, 2].max() - 7.0) < 1e-5
    v, f = terrain_mesh.vertices, terrain_mesh.faces
    assert (np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])[:, 2] > 0).all()  # facing up
    # the ground spans the margin: from -margin cells to the tile's east edge + margin cells
    assert terrain_mesh.vertices[:, 0].min() < 0 and terrain_mesh.vertices[:, 0].max() > 16.0
    building = read_ply(tmp_path / "buildings-concrete.ply")
    roof = building.vertices[:, 2].max()
    assert abs(roof - (10.0 + ground[margin + 3, margin + 3])) < 1e-4  # roof = building height over its ground
    surface = receiver_surface(ground[margin:-margin, margin:-margin], 2.0, 1.5)
    assert len(surface.faces) == 2 * 64
    z = surface.vertices[surface.faces[::2, 0], 2].reshape(8, 8)
    np.testing.assert_allclose(z, ground[margin:-margin, margin:-margin] + 1.5, atol=1e-5)
    normals = np.cross(*(surface.vertices[surface.faces[:, k]] - surface.vertices[surface.faces[:, 0]] for k in (1, 2)))
    assert (normals[:, 2] > 0).all()


def _need_sionna() -> None:
    import os

    from tomoformer.sim import sionna as sionna_module

    pytest.importorskip("sionna.rt")
    if not (sionna_module.find_llvm() or os.environ.get("DRJIT_LIBLLVM_PATH")):
        pytest.skip("no LLVM >= 19 for Dr.Jit's CPU backend")


def test_ray_trace_with_real_materials_and_a_ring_layout() -> None:
    _need_sionna()
    from tomoformer.sim.sionna import RayOptions, sionna_samples

    config = SimConfig(size=16, frames=2, tx_layout="ring", tx_outside_max_cells=4.0)
    options = RayOptions(samples_per_tx=20_000, max_depth=2, building_material="real")
    out = sionna_samples(config, 0, 0, 1, options=options)
    assert out["signals"].shape == (1, 2, 16, 16) and np.isfinite(out["signals"]).mean() > 0.5
    assert ((out["tx_pos"][0, :, :2] < -0.5) | (out["tx_pos"][0, :, :2] > 15.5)).any(-1).all()


def test_ray_trace_on_terrain_is_measured_on_the_ground() -> None:
    _need_sionna()
    from tomoformer.sim.sionna import RayOptions, radio_maps

    heights = np.zeros((16, 16), np.float32)
    heights[4:8, 10:14] = 12.0
    margin = 3
    ground = np.zeros((22, 22), np.float32)
    ground[:, margin + 6 : margin + 8] = 25.0  # a ridge across the tile, columns 6-7
    tx = np.array([[8.0, 2.0, 3.0]], np.float32)
    config = SimConfig(size=16, frames=1)
    options = RayOptions(samples_per_tx=50_000, max_depth=2)
    flat = radio_maps(heights, tx, config, options)
    ridge = radio_maps(heights, tx, config, options, terrain=ground)
    assert ridge.shape == flat.shape == (1, 16, 16)
    near = np.nanmedian(ridge[0, :, :5]) - np.nanmedian(flat[0, :, :5])
    assert abs(near) < 6.0  # in front of the ridge: about the same
    behind_flat, behind_ridge = flat[0, :, 10:][heights[:, 10:] == 0], ridge[0, :, 10:][heights[:, 10:] == 0]
    # behind the ridge: much weaker (or nothing arrives)
    assert np.nanmedian(np.nan_to_num(behind_ridge, nan=-300.0)) < np.nanmedian(behind_flat) - 10
