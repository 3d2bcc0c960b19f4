"""Calibration of the fast simulator: it recovers the losses that generated a set of maps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tomoformer.cli import main
from tomoformer.data.format import write_dataset
from tomoformer.errors import DataError
from tomoformer.sim import SimConfig, dataset_attrs, simulate_samples
from tomoformer.sim.calibrate import calibrate_dataset, error_stats, fit_fast_params


def _maps(**kw) -> tuple[dict[str, np.ndarray], SimConfig]:
    config = SimConfig(size=16, frames=4, style="dense", noise_std_db=0.0, shadowing_std_db=0.0, n_angles=64, **kw)
    return simulate_samples(config, seed=3, start=0, count=4), config


def test_fit_recovers_wall_and_indoor_loss_exactly_without_noise():
    data, truth = _maps(wall_loss_db=20.0, indoor_loss_db_per_m=0.3)
    start = dataclasses.replace(truth, wall_loss_db=5.0, indoor_loss_db_per_m=1.0)
    result = fit_fast_params(data["heights"], data["tx_pos"], data["signals"], start)
    assert result.config.wall_loss_db == pytest.approx(20.0, abs=0.01)
    assert result.config.indoor_loss_db_per_m == pytest.approx(0.3, abs=0.001)
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
    assert main(["sim", "calibrate", "--data", str(store), "--out", str(out), "--json", str(report)]) == 0
    fitted = SimConfig.from_yaml(out)
    assert fitted.wall_loss_db == pytest.approx(18.0, abs=0.01) and fitted.size == 16
    assert "before" in report.read_text() and "RMSE" in capsys.readouterr().out
    del data["heights"]
    bare = write_dataset(tmp_path / "bare.npz", data, {"cell_size_m": 2.0})
    with pytest.raises(DataError, match="heights"):
        calibrate_dataset(bare)
    assert main(["sim", "calibrate", "--data", str(bare), "--out", str(tmp_path / "x.yaml")]) == 2
