"""Randomised physics: ranges in SimConfig, per-sample draws, roofs and street-canyon light."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tomoformer.cli import main
from tomoformer.errors import ConfigError
from tomoformer.sim import SimConfig, path_gain_db, simulate_samples
from tomoformer.sim.canyon import canyon_light
from tomoformer.sim.config import RANGE_FIELDS
from tomoformer.sim.physics import draw_physics, fixed_physics
from tomoformer.sim.propagation import path_gain_and_loss_db
from tomoformer.sim.simulate import prepare

TINY = dict(size=16, frames=4)
# Everything fixed: the physics before it was randomised.
FIXED = dict(
    wall_loss_db=12.0,
    indoor_loss_db_per_m=0.6,
    roof_loss_db=None,
    canyon_probability=0.0,
    shadowing_std_db=4.0,
    noise_std_db=1.0,
)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"wall_loss_db": [30.0, 1.0]}, "wall_loss_db"),
        ({"indoor_loss_db_per_m": -0.1}, "indoor_loss_db_per_m"),
        ({"noise_std_db": [-1.0, 2.0]}, "noise_std_db"),
        ({"roof_loss_db": [1.0, 2.0, 3.0]}, "roof_loss_db"),
        ({"shadowing_std_db": "loud"}, "shadowing_std_db"),
        ({"canyon_probability": 1.5}, "canyon_probability"),
        ({"canyon_loss_db_per_m": [2.0, float("nan")]}, "canyon_loss_db_per_m"),
        ({"roof_opaque_loss_db": -3.0}, "roof_opaque_loss_db"),
    ],
)
def test_invalid_ranges_name_the_field(values, field):
    with pytest.raises(ConfigError, match=field):
        SimConfig.from_dict(values)


def test_simulate_refuses_a_bad_range_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "x.zarr"
    code = main(["simulate", "--out", str(out), "--n", "1", "--size", "16", "--frames", "2", "--wall-loss-db", "30,1"])
    assert code == 2 and not out.exists() and not list(tmp_path.iterdir())
    assert "wall_loss_db" in capsys.readouterr().err
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("noise_std_db: [3, -1]\n")
    assert main(["simulate", "--config", str(yaml_file), "--out", str(out), "--n", "1"]) == 2
    assert not out.exists()


def test_ranges_round_trip_and_single_values_stay_numbers(tmp_path):
    cfg = SimConfig.from_dict({"wall_loss_db": [2, 20], "noise_std_db": 1})
    assert cfg.wall_loss_db == (2.0, 20.0) and cfg.noise_std_db == 1.0
    assert cfg.span("noise_std_db") == (1.0, 1.0)
    assert SimConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["wall_loss_db"] == [2.0, 20.0]  # YAML/JSON friendly


def test_width_zero_range_equals_the_fixed_value_bit_for_bit():
    single = SimConfig(**TINY, **FIXED)
    ranged = SimConfig(**TINY, **{k: [v, v] if k in RANGE_FIELDS and v is not None else v for k, v in FIXED.items()})
    assert ranged.wall_loss_db == (12.0, 12.0)
    a = simulate_samples(single, seed=4, start=0, count=3)
    b = simulate_samples(ranged, seed=4, start=0, count=3)
    for key, value in a.items():
        np.testing.assert_array_equal(value, b[key])


def test_per_sample_draws_differ_and_repeat_by_seed():
    cfg = SimConfig(**TINY)  # the default ranges
    draws = [prepare(cfg, 0, i).physics for i in range(6)]
    assert len({p.wall_loss_db for p in draws}) == 6
    assert all(1.0 <= p.wall_loss_db <= 30.0 and 2.0 <= p.shadowing_std_db <= 8.0 for p in draws)
    assert [prepare(cfg, 0, i).physics for i in range(6)] == draws
    assert prepare(cfg, 1, 0).physics != draws[0]
    # Physics and layout come from separate generators: changing a range keeps every city and transmitter.
    wider = dataclasses.replace(cfg, wall_loss_db=(5.0, 6.0))
    assert np.array_equal(prepare(wider, 0, 2).heights, prepare(cfg, 0, 2).heights)
    assert np.array_equal(prepare(wider, 0, 2).tx_pos, prepare(cfg, 0, 2).tx_pos)
    a = simulate_samples(cfg, seed=0, start=0, count=2)["signals"]
    np.testing.assert_array_equal(a, simulate_samples(cfg, seed=0, start=0, count=2)["signals"])


def test_wall_loss_range_is_log_uniform():
    cfg = SimConfig(wall_loss_db=(1.0, 100.0))
    rng = np.random.default_rng(0)
    walls = np.array([draw_physics(cfg, rng).wall_loss_db for _ in range(2000)])
    # Log-uniform over two decades: half the draws below the geometric mean of 10 dB.
    assert np.mean(walls < 10.0) == pytest.approx(0.5, abs=0.04)
    with pytest.raises(ValueError, match="wall_loss_db"):
        fixed_physics(cfg)


def _tower_gain(**kw) -> np.ndarray:
    h = np.zeros((32, 32), np.float32)
    h[:, 10:20] = 10.0
    cfg = SimConfig(**{**FIXED, "indoor_loss_db_per_m": 0.0, "roof_opaque_probability": 0.0, **kw})
    return path_gain_db(torch.from_numpy(h)[None], torch.tensor([[[16.0, 2.0, 30.0]]]), cfg)[0, 0].numpy()


def test_roof_loss_applies_where_the_ray_comes_through_the_roof():
    as_walls = _tower_gain()
    metal = _tower_gain(roof_loss_db=40.0)
    diff = (as_walls - metal)[16]
    # Near the facade the descending ray enters through the wall; farther in, through the 10 m roof.
    np.testing.assert_allclose(diff[:13], 0.0, atol=1e-4)
    np.testing.assert_allclose(diff[15:20], 40.0 - 12.0, atol=1e-3)
    np.testing.assert_array_equal(_tower_gain(roof_loss_db=12.0), as_walls)


def _street_corner() -> tuple[torch.Tensor, torch.Tensor]:
    """An L of streets: an east-west street (rows 18-21) and a north-south one (cols 28-31) in a built block."""
    h = np.full((40, 40), 20.0, np.float32)
    h[18:22, :] = 0.0
    h[:, 28:32] = 0.0
    return torch.from_numpy(h)[None], torch.tensor([[[20.0, 5.0, 1.5]]])


def test_canyon_light_brightens_the_shadowed_street_only():
    heights, tx = _street_corner()
    cfg = SimConfig(**FIXED)
    gain, loss = path_gain_and_loss_db(heights, tx, cfg, [fixed_physics(cfg)])
    outdoor = heights <= cfg.rx_height_m
    lit = canyon_light(gain, outdoor, torch.tensor([6.0]), torch.tensor([1.0]), shadowed=loss > 0.05)[0, 0]
    gain, loss = gain[0, 0], loss[0, 0]
    # The cross street far from the corner is behind walls for the straight ray, the canyon light reaches it.
    assert loss[2, 29] > 1 and lit[2, 29] > gain[2, 29] + 20
    # Farther along the cross street means darker (loss per metre), and never brighter than the corner.
    assert lit[2, 29] < lit[10, 29] < gain[20, 29]
    # Cells in line of sight and inside buildings keep the direct path.
    assert torch.equal(lit[loss <= 0.05], gain[loss <= 0.05])
    assert torch.equal(lit[heights[0] > 1.5], gain[heights[0] > 1.5])
    off = canyon_light(gain[None, None], outdoor, torch.tensor([float("inf")]), torch.tensor([1.0]))
    assert torch.equal(off[0, 0], gain)


@pytest.mark.parametrize("crop", [0, 1])  # 40 x 40 (whole blocks) and 39 x 39 (padded blocks)
def test_canyon_light_on_coarse_blocks_matches_full_resolution(crop):
    heights, tx = _street_corner()
    heights, tx = heights[:, crop:, crop:], tx - torch.tensor([crop, crop, 0.0])
    cfg = SimConfig(**FIXED)
    gain, loss = path_gain_and_loss_db(heights, tx, cfg, [fixed_physics(cfg)])
    args = (gain, heights <= cfg.rx_height_m, torch.tensor([6.0]), torch.tensor([0.5]))
    fine = canyon_light(*args, shadowed=loss > 0.05)[0, 0]
    coarse = canyon_light(*args, shadowed=loss > 0.05, coarse=2)[0, 0]
    street = (heights[0] <= 1.5) & (loss[0, 0] > 0.05)
    # Blocks of 2 x 2 cells move sources and receivers by up to a cell: about one cell's loss (1 dB) apart.
    assert (coarse - fine)[street].abs().max() < 3.0
    assert coarse[2 - crop, 29 - crop] > gain[0, 0, 2 - crop, 29 - crop] + 20
    assert torch.equal(coarse[~street], gain[0, 0][~street])


def test_canyon_light_does_not_cross_buildings():
    # Two parallel streets joined by nothing: the lit one does not light the other (the dark street only
    # passes its own light along).
    h = np.full((24, 24), 20.0, np.float32)
    h[4:7, :] = 0.0
    h[16:19, :] = 0.0
    heights = torch.from_numpy(h)[None]
    cfg = SimConfig(**FIXED)
    gain, loss = path_gain_and_loss_db(heights, torch.tensor([[[5.0, 2.0, 1.5]]]), cfg, [fixed_physics(cfg)])
    lit = canyon_light(gain, heights <= 1.5, torch.tensor([3.0]), torch.tensor([0.5]), shadowed=loss > 0.05)
    assert gain[0, 0, 4:7].max() > gain[0, 0, 16:19].max() + 30
    assert lit[0, 0, 16:19].max() <= gain[0, 0, 16:19].max()
    assert torch.equal(lit[0, 0, 4:7], gain[0, 0, 4:7])  # in line of sight


def test_simulated_shadowed_streets_are_brighter_with_canyon_light():
    base = dict(size=32, frames=4, style="dense", **{**FIXED, "shadowing_std_db": 0.0, "noise_std_db": 0.0})
    dark = simulate_samples(SimConfig(**base), seed=1, start=0, count=2)
    lit = simulate_samples(
        SimConfig(**{**base, "canyon_probability": 1.0, "canyon_corner_loss_db": 6.0}), seed=1, start=0, count=2
    )
    assert (lit["signals"] >= dark["signals"]).all() and (lit["signals"] > dark["signals"] + 1).any()
    indoor = np.broadcast_to(dark["buildings"][:, None].astype(bool), dark["signals"].shape)
    np.testing.assert_array_equal(lit["signals"][indoor], dark["signals"][indoor])
