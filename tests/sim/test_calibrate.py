"""Calibration of the fast simulator: it recovers the losses that generated a set of maps."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tomoformer.cli import main
from tomoformer.data.format import write_dataset
from tomoformer.data.simulated import calibrate_dataset
from tomoformer.errors import ConfigError, DataError
from tomoformer.sim import SimConfig, dataset_attrs, simulate_samples
from tomoformer.sim.calibrate import fit_fast_params
from tomoformer.sim.calibrate_stats import compare_distributions, distribution_stats, error_stats


def _maps(**kw) -> tuple[dict[str, np.ndarray], SimConfig]:
    fixed = dict(roof_loss_db=None, canyon_probability=0.0, noise_std_db=0.0, shadowing_std_db=0.0)
    config = SimConfig(size=16, frames=4, style="dense", n_angles=64, **{**fixed, **kw})
    return simulate_samples(config, seed=3, start=0, count=4), config


def test_fit_recovers_wall_and_indoor_loss_exactly_without_noise():
    data, truth = _maps(wall_loss_db=20.0, indoor_loss_db_per_m=0.3, roof_loss_db=4.0)
    start = dataclasses.replace(truth, wall_loss_db=5.0, indoor_loss_db_per_m=1.0, roof_loss_db=None)
    result = fit_fast_params(data["heights"], data["tx_pos"], data["signals"], start)
    assert result.config.wall_loss_db == pytest.approx(20.0, abs=0.01)
    assert result.config.indoor_loss_db_per_m == pytest.approx(0.3, abs=0.001)
    assert result.config.roof_loss_db == pytest.approx(4.0, abs=0.01)
    assert result.after["rmse_db"] < 0.01 < 1.0 < result.before["rmse_db"]
    assert result.config.shadowing_std_db < 0.01
    assert result.n_cells == data["signals"].size


def test_fit_with_shadowing_noise_and_missing_cells():
    data, truth = _maps(wall_loss_db=15.0, indoor_loss_db_per_m=0.5)
    noisy = dataclasses.replace(truth, shadowing_std_db=3.0, noise_std_db=1.0, floor_db=-90.0)
    data = simulate_samples(noisy, seed=3, start=0, count=4)
    assert np.isnan(data["signals"]).any()  # the floor removed some cells
    start = dataclasses.replace(noisy, wall_loss_db=0.0, indoor_loss_db_per_m=0.0, shadowing_std_db=0.0)
    result = fit_fast_params(data["heights"], data["tx_pos"], data["signals"], start, fit_floor=True)
    assert result.config.wall_loss_db == pytest.approx(15.0, abs=2.5)
    assert result.config.shadowing_std_db == pytest.approx(3.0, abs=1.0)
    assert result.after["rmse_db"] < result.before["rmse_db"]
    assert result.config.floor_db is not None and -100 < result.config.floor_db < -80


def test_error_stats_use_cells_finite_in_both():
    a = np.array([1.0, 2.0, np.nan, 4.0])
    b = np.array([0.0, np.nan, 5.0, 6.0])
    stats = error_stats(a, b)
    assert stats["mae_db"] == pytest.approx(1.5) and stats["bias_db"] == pytest.approx(-0.5)
    assert stats["rmse_db"] == pytest.approx(np.sqrt(2.5))
    with pytest.raises(DataError):
        error_stats(np.array([np.nan]), np.array([1.0]))


def test_sim_calibrate_cli_writes_a_loadable_config(tmp_path: Path, capsys):
    data, truth = _maps(wall_loss_db=18.0, indoor_loss_db_per_m=0.2)
    store = write_dataset(tmp_path / "rt.npz", data, dataset_attrs(dataclasses.replace(truth, wall_loss_db=6.0)))
    out, report = tmp_path / "calibrated.yaml", tmp_path / "report.json"
    assert (
        main(["sim", "calibrate", "--data", str(store), "--out", str(out), "--json", str(report), "--draws", "3"]) == 0
    )
    fitted = SimConfig.from_yaml(out)
    assert fitted.wall_loss_db == pytest.approx(18.0, abs=0.01) and fitted.size == 16
    assert "before" in report.read_text() and "RMSE" in capsys.readouterr().out
    stats = json.loads(report.read_text())["distributions"]
    assert set(stats) == {"start", "calibrated"} and "empty_outdoor" in stats["start"]["ray_tracer"]
    out2 = tmp_path / "quick.yaml"
    assert main(["sim", "calibrate", "--data", str(store), "--out", str(out2), "--draws", "2"]) == 0
    assert "indoor-outdoor" in capsys.readouterr().out
    assert main(["sim", "calibrate", "--data", str(store), "--out", str(tmp_path / "y.yaml"), "--draws", "-1"]) == 2
    del data["heights"]
    bare = write_dataset(tmp_path / "bare.npz", data, {"cell_size_m": 2.0})
    with pytest.raises(DataError, match="heights"):
        calibrate_dataset(bare)
    assert main(["sim", "calibrate", "--data", str(bare), "--out", str(tmp_path / "x.yaml")]) == 2


def test_distribution_stats_on_a_known_raster():
    nan = np.nan
    signals = np.array([[[[-10.0, nan, -4.0, -2.0]], [[nan, nan, -5.0, nan]]]])  # [N=1, T=2, H=1, W=4]
    buildings = np.array([[[True, True, False, False]]])
    shadowed = np.zeros((1, 2, 1, 4), bool)
    shadowed[..., 3] = True
    stats = distribution_stats(signals, buildings, shadowed)
    # Frame 1 has no indoor value and no shadowed value: only frame 0 counts for the gaps.
    assert stats["indoor_minus_outdoor_db"] == pytest.approx(-10.0 - (-3.0))
    assert stats["shadowed_minus_lit_outdoor_db"] == pytest.approx(-2.0 - (-4.0))
    assert stats["empty_indoor"] == pytest.approx(3 / 4) and stats["empty_outdoor"] == pytest.approx(1 / 4)
    assert np.isnan(distribution_stats(signals, buildings)["shadowed_minus_lit_outdoor_db"])


def test_compare_distributions_brackets_the_truth_only_with_a_range():
    data, truth = _maps(wall_loss_db=20.0, indoor_loss_db_per_m=0.3)
    args = (data["heights"], data["tx_pos"], data["signals"])
    ranged = dataclasses.replace(truth, wall_loss_db=(2.0, 60.0), indoor_loss_db_per_m=(0.0, 0.6))
    wide = compare_distributions(*args, ranged, draws=8, seed=0)
    assert wide["bracketed"]["indoor_minus_outdoor_db"] and wide["draws"] == 8
    assert wide["fast"]["indoor_minus_outdoor_db"]["min"] < wide["fast"]["indoor_minus_outdoor_db"]["max"]
    assert wide["ray_tracer"]["empty_indoor"] == 0.0  # noiseless fast maps have every cell
    thin = compare_distributions(*args, dataclasses.replace(truth, wall_loss_db=1.0, indoor_loss_db_per_m=0.0), 2)
    assert not thin["bracketed"]["indoor_minus_outdoor_db"]
    assert thin["fast"]["indoor_minus_outdoor_db"]["min"] > thin["ray_tracer"]["indoor_minus_outdoor_db"]
    same = compare_distributions(*args, truth, draws=1)
    assert same["rmse_db"]["median"] < 1e-3  # the same physics on the same geometry: the same maps


def test_floor_fraction_empties_the_weakest_cells_per_sample():
    cfg = SimConfig(size=16, frames=4, style="dense", floor_fraction=0.25)
    signals = simulate_samples(cfg, seed=0, start=0, count=2)["signals"]
    np.testing.assert_array_equal(np.isnan(signals).sum(axis=(2, 3)), 64)
    varied = simulate_samples(dataclasses.replace(cfg, floor_fraction=(0.0, 0.9)), seed=0, start=0, count=4)
    empty = np.isnan(varied["signals"]).mean(axis=(1, 2, 3))
    assert len(set(np.round(empty, 3))) == 4 and empty.max() < 0.9
    with pytest.raises(ConfigError, match="floor_fraction"):
        SimConfig(floor_fraction=(0.5, 1.0))
