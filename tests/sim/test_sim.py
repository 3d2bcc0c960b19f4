"""Behaviour of the fast simulator: physics, statistics, determinism, layouts, transmitters, masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tomoformer.errors import ConfigError
from tomoformer.sim import (
    STYLES,
    SimConfig,
    dataset_attrs,
    make_city,
    path_gain_db,
    shadowing_db,
    simulate_samples,
)
from tomoformer.sim import simulate as simulate_module
from tomoformer.sim.cities import outdoor_component
from tomoformer.sim.polar import resample_to_grid

C = 299_792_458.0
# The physics before it was randomised: fixed values, roofs cost as walls, no canyon light.
FIXED = dict(
    wall_loss_db=12.0,
    indoor_loss_db_per_m=0.6,
    roof_loss_db=None,
    canyon_probability=0.0,
    shadowing_std_db=4.0,
    noise_std_db=1.0,
)


def _gain(heights: np.ndarray, tx: tuple[float, float, float], **kw) -> np.ndarray:
    cfg = SimConfig(**{**FIXED, **kw})
    h = torch.as_tensor(heights, dtype=torch.float32)[None]
    return path_gain_db(h, torch.tensor([[tx]], dtype=torch.float32), cfg)[0, 0].numpy()


def test_free_space_matches_friis():
    f = 3.5e9
    g = _gain(np.zeros((40, 40)), (0.0, 0.0, 1.5), frequency_hz=f)
    d = np.hypot(*np.meshgrid(np.arange(40), np.arange(40), indexing="ij")) * 2.0
    friis = -20 * np.log10(4 * np.pi * np.maximum(d, 1.0) * f / C)
    np.testing.assert_allclose(g, friis, atol=0.5)
    # -20 dB per decade of distance.
    assert g[0, 3] - g[0, 30] == pytest.approx(20.0, abs=0.05)


def test_thin_wall_costs_wall_loss_and_thick_building_adds_indoor_loss():
    h = np.zeros((32, 32))
    h[:, 10] = 30.0
    free = _gain(np.zeros((32, 32)), (16, 4, 1.5), indoor_loss_db_per_m=0.0)
    walled = _gain(h, (16, 4, 1.5), indoor_loss_db_per_m=0.0)
    np.testing.assert_allclose((free - walled)[14:19, 14:30], 12.0, atol=1e-3)
    np.testing.assert_allclose((free - walled)[14:19, :9], 0.0, atol=1e-3)
    h[:, 10:15] = 30.0  # 5 cells = 10 m thick
    thick = _gain(h, (16, 4, 1.5), wall_loss_db=10.0, indoor_loss_db_per_m=0.5)
    free = _gain(np.zeros((32, 32)), (16, 4, 1.5))
    assert (free - thick)[16, 20] == pytest.approx(10.0 + 0.5 * 10.0, abs=1e-3)
    # A receiver inside the building gets the wall plus the indoor metres so far.
    assert (free - thick)[16, 10] == pytest.approx(10.0 + 0.5 * 2.0, abs=1e-3)


def test_building_lower_than_ray_does_not_block():
    h = np.zeros((32, 48))
    h[:, 10:12] = 5.0
    free = _gain(np.zeros((32, 48)), (16, 4, 30.0))
    low = _gain(h, (16, 4, 30.0))
    # Far receivers see over the 5 m building; right behind it the descending ray hits it.
    np.testing.assert_allclose((free - low)[14:19, 20:], 0.0, atol=1e-3)
    assert (free - low)[16, 10] > 10.0


def test_tx_below_receiver_height_general_path():
    h = np.zeros((32, 32))
    h[:, 10:12] = 1.4  # between tx (1.0 m) and rx (1.5 m): blocks only far receivers
    diff = _gain(np.zeros((32, 32)), (16, 4, 1.0)) - _gain(h, (16, 4, 1.0))
    np.testing.assert_allclose(diff[16, :12], 0.0, atol=1e-3)
    assert diff[16, 20] > 12.0


def test_shadowing_statistics():
    corr_cells = 5.0
    gen = torch.Generator().manual_seed(0)
    field = shadowing_db(400, 48, 48, 4.0, corr_cells, gen).numpy()
    assert field.std() == pytest.approx(4.0, rel=0.15)
    assert abs(field.mean()) < 0.3
    for lag in (1, 3, 5, 10):
        a, b = field[:, :, :-lag].ravel(), field[:, :, lag:].ravel()
        assert np.corrcoef(a, b)[0, 1] == pytest.approx(math.exp(-lag / corr_cells), abs=0.07)


TINY = dict(size=16, frames=4)


def test_determinism_and_batch_split_invariance():
    cfg = SimConfig(**TINY, measured_fraction=0.5, floor_db=-90.0)
    whole = simulate_samples(cfg, seed=7, start=0, count=4)
    again = simulate_samples(cfg, seed=7, start=0, count=4)
    parts = [simulate_samples(cfg, seed=7, start=s, count=c) for s, c in ((0, 1), (1, 3))]
    for key, value in whole.items():
        np.testing.assert_array_equal(value, again[key])
        np.testing.assert_array_equal(value, np.concatenate([p[key] for p in parts]))
    other = simulate_samples(cfg, seed=8, start=0, count=1)
    assert not np.array_equal(other["heights"], whole["heights"][:1])


def test_output_shapes_dtypes_and_attrs():
    cfg = SimConfig(**TINY)
    out = simulate_samples(cfg, seed=0, start=3, count=2)
    assert out["signals"].shape == (2, 4, 16, 16) and out["signals"].dtype == np.float32
    assert out["buildings"].dtype == np.uint8 and out["heights"].dtype == np.float32
    assert out["tx_pos"].shape == (2, 4, 3) and out["group"].dtype == np.int16
    assert np.isfinite(out["signals"]).all() and (out["signals"] < -30).all()
    np.testing.assert_array_equal(out["buildings"], out["heights"] > cfg.rx_height_m)
    attrs = dataset_attrs(cfg)
    assert attrs["signal_unit"] == "path_gain_db" and attrs["sim_config"]["size"] == 16
    assert SimConfig.from_dict(attrs["sim_config"]) == cfg


def test_style_building_fractions_and_heights():
    rng = np.random.default_rng(0)
    frac = {}
    for style in STYLES:
        maps = [make_city(style, 64, rng, 2.0) for _ in range(10)]
        frac[style] = np.mean([(m > 0).mean() for m in maps])
        assert all(m.shape == (64, 64) and m.dtype == np.float32 for m in maps)
    assert frac["dense"] > frac["suburban"] > frac["open"]
    assert frac["oldtown"] > frac["suburban"] and frac["industrial"] > frac["open"]
    assert 0 < frac["open"] < 0.1
    dense = make_city("dense", 64, rng, 2.0)
    assert dense[dense > 0].min() >= 12 and dense.max() <= 40
    group = simulate_samples(SimConfig(**TINY, style="industrial"), 0, 0, 2)["group"]
    assert (group == STYLES.index("industrial")).all()


def test_random_tx_outdoors_and_path_tx_moves_smoothly():
    out = simulate_samples(SimConfig(size=32, frames=16, style="dense"), seed=1, start=0, count=3)
    for heights, tx in zip(out["heights"], out["tx_pos"], strict=True):
        r, c = np.round(tx[:, 0]).astype(int), np.round(tx[:, 1]).astype(int)
        assert (heights[r, c] == 0).all()
        assert (tx[:, 2] >= 1.5).all() and (tx[:, 2] <= 30).all()
    cfg = SimConfig(size=32, frames=16, style="dense", tx_mode="path", tx_path_step_cells=2)
    out = simulate_samples(cfg, seed=1, start=0, count=2)
    for heights, tx in zip(out["heights"], out["tx_pos"], strict=True):
        steps = np.abs(np.diff(tx[:, :2], axis=0)).sum(axis=1)
        assert steps.max() <= 2 and steps.mean() > 0.5
        assert (heights[tx[:, 0].astype(int), tx[:, 1].astype(int)] == 0).all()
        assert np.ptp(tx[:, 2]) == 0


def test_tx_outside_grid():
    tx = simulate_samples(SimConfig(**TINY, tx_outside_fraction=1.0), 0, 0, 2)["tx_pos"]
    outside = (tx[..., :2] < -0.5) | (tx[..., :2] > 15.5)
    assert outside.any(axis=-1).all()


def test_floor_and_sparsity_masks():
    out = simulate_samples(SimConfig(**TINY, floor_db=-75.0), 0, 0, 2)
    nan = np.isnan(out["signals"])
    assert nan.any() and not nan.all()
    assert (out["signals"][~nan] >= -75.0).all()
    sig = simulate_samples(SimConfig(**TINY, measured_fraction=0.25), 0, 0, 2)["signals"]
    np.testing.assert_array_equal(np.isfinite(sig).sum(axis=(2, 3)), 64)
    cfg = SimConfig(size=32, frames=3, style="suburban", measured_fraction=0.1, sparsity_mode="path")
    out = simulate_samples(cfg, 0, 0, 2)
    measured = np.isfinite(out["signals"])
    counts = measured.sum(axis=(2, 3))
    assert (counts <= round(0.1 * 32 * 32)).all() and (counts > 0.05 * 32 * 32).all()
    for heights, m in zip(out["heights"], measured, strict=True):
        street = outdoor_component(heights, cfg.rx_height_m)
        assert street[m.any(axis=0)].all()  # drive tests stay on the street network


def test_config_errors_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown sim config key"):
        SimConfig.from_dict({"sizes": 10})
    with pytest.raises(ConfigError, match="size"):
        SimConfig.from_dict({"size": -3})
    with pytest.raises(ConfigError, match="style"):
        SimConfig.from_dict({"style": "gothic"})
    with pytest.raises(ConfigError, match="measured_fraction"):
        SimConfig.from_dict({"measured_fraction": 0})
    with pytest.raises(ConfigError, match="wall_loss_db"):
        SimConfig.from_dict({"wall_loss_db": "loud"})
    path = tmp_path / "sim.yaml"
    path.write_text("size: 32\nstyle: oldtown\nfloor_db: -120\n")
    cfg = SimConfig.from_yaml(path)
    assert (cfg.size, cfg.style, cfg.floor_db) == (32, "oldtown", -120.0)
    assert SimConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_physics():
    cfg = SimConfig(**TINY, shadowing_std_db=0.0, noise_std_db=0.0)
    cpu = simulate_samples(cfg, 0, 0, 2, device="cpu")
    gpu = simulate_samples(cfg, 0, 0, 2, device="cuda")
    np.testing.assert_array_equal(cpu["heights"], gpu["heights"])
    np.testing.assert_allclose(cpu["signals"], gpu["signals"], atol=1e-3)
    noisy = simulate_samples(SimConfig(**TINY, measured_fraction=0.5), 0, 0, 1, device="cuda")
    assert np.isfinite(noisy["signals"]).sum() == 4 * 128


def test_path_gain_does_not_depend_on_which_frames_share_a_chunk():
    # Frames are sorted by ray length and chunked; each frame must come out as if computed alone.
    rng = np.random.default_rng(3)
    heights = torch.as_tensor(make_city("dense", 24, rng, 2.0))[None]
    tx = torch.tensor([[[1.2, 2.0, 9.0], [12.0, 11.6, 25.0], [-6.0, 30.0, 4.0], [23.0, 0.4, 1.0]]])
    cfg = SimConfig(size=24, **{**FIXED, "roof_loss_db": 3.0, "roof_opaque_probability": 0.0})  # roofs: see the kernels
    together = path_gain_db(heights, tx, cfg)
    for t in range(tx.shape[1]):
        alone = path_gain_db(heights, tx[:, t : t + 1], cfg)
        np.testing.assert_allclose(alone[0, 0].numpy(), together[0, t].numpy(), atol=1e-4)


def test_parallel_samples_match_sequential():
    cfg = SimConfig(**TINY, measured_fraction=0.5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # one worker: samples run one after the other
        sequential = simulate_samples(cfg, seed=2, start=0, count=3)
        torch.set_num_threads(2)
        parallel = simulate_samples(cfg, seed=2, start=0, count=3)
        assert torch.get_num_threads() == 2  # restored after the thread pool
    finally:
        torch.set_num_threads(threads)
    for key, value in sequential.items():
        np.testing.assert_array_equal(value, parallel[key])


@pytest.mark.parametrize("batch_samples", [1, 2, 5])
def test_batched_path_matches_per_sample(monkeypatch, batch_samples):
    # The batched path (the default on GPUs) must not depend on how samples are grouped into batches.
    configs = (
        SimConfig(**TINY, measured_fraction=0.5, floor_db=-90.0),
        SimConfig(**TINY, measured_fraction=0.3, sparsity_mode="path", tx_outside_fraction=0.3, tx_height_min_m=0.5),
        SimConfig(**TINY, tx_mode="path", shadowing_std_db=0.0, noise_std_db=0.0),
    )
    monkeypatch.setitem(simulate_module._BATCH_CELLS, True, batch_samples * 4 * 16 * 16)
    monkeypatch.setattr(simulate_module, "_MIN_BATCHES", 1)
    for cfg in configs:
        alone = simulate_samples(cfg, seed=5, start=1, count=5, batched=False)
        batched = simulate_samples(cfg, seed=5, start=1, count=5, batched=True)
        for key, value in alone.items():
            if key == "signals":
                np.testing.assert_array_equal(np.isnan(value), np.isnan(batched[key]))
                np.testing.assert_allclose(value, batched[key], atol=1e-3)
            else:
                np.testing.assert_array_equal(value, batched[key])


def test_resample_gather_matches_slices():
    # The GPU reads the Cartesian table with one gather; the CPU with a slice per frame.
    loss = torch.randn(3, 40, 16, generator=torch.Generator().manual_seed(0))
    origin = torch.tensor([[0, 0], [5, 9], [-3, 20]])
    slices = resample_to_grid(loss, origin, torch.empty(3, 12, 14), 1.0, gather=False)
    gathered = resample_to_grid(loss, origin, torch.empty(3, 12, 14), 1.0, gather=True)
    np.testing.assert_array_equal(slices.numpy(), gathered.numpy())
