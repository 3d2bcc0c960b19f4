"""Calibration scores on hand-made inputs, temperature scaling, and checkpoints carrying a temperature."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.classification import BinaryCalibrationError

from tomoformer.checkpoint import load_checkpoint, save_checkpoint, write_with_hparams
from tomoformer.evaluation.calibration import (
    TemperatureScaled,
    calibration_metrics,
    fit_temperature,
    with_temperature,
)
from tomoformer.evaluation.figures import reliability_figure
from tomoformer.models.registry import create_model


def test_scores_of_hand_made_maps() -> None:
    p = np.array([[[0.9, 0.9, 0.1, 0.1]]], dtype=np.float32)
    y = np.array([[[1, 0, 0, 0]]], dtype=np.uint8)
    scores = calibration_metrics(p, y)
    # Bin (0.867, 0.933]: mean p 0.9, frequency 0.5; bin (0.067, 0.133]: mean p 0.1, frequency 0.
    assert scores["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert scores["brier"] == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    assert scores["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.1) + 2 * math.log(0.9)) / 4, rel=1e-6)
    assert sum(scores["reliability"]["count"]) == 4


def test_perfect_and_nan_cells() -> None:
    y = np.array([[[1, 0, 1, 0]]], dtype=np.uint8)
    perfect = calibration_metrics(y.astype(np.float32), y)
    assert perfect["ece"] == 0 and perfect["brier"] == 0 and perfect["nll"] < 1e-6
    with_nan = calibration_metrics(np.array([[[1.0, 0.0, np.nan, 0.0]]]), y)
    assert sum(with_nan["reliability"]["count"]) == 3 and with_nan["brier"] == 0


def test_ece_matches_torchmetrics() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((3, 20, 20)).astype(np.float32)
    y = (rng.random((3, 20, 20)) < p**2).astype(np.uint8)
    reference = BinaryCalibrationError(n_bins=15, norm="l1")(torch.from_numpy(p), torch.from_numpy(y))
    assert calibration_metrics(p, y)["ece"] == pytest.approx(float(reference), abs=1e-6)


def test_temperature_scaling_lowers_nll_of_an_overconfident_toy() -> None:
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 2, 20_000)
    y = (rng.random(true_logits.size) < 1 / (1 + np.exp(-true_logits))).astype(np.uint8)
    overconfident = 3.0 * true_logits
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(3.0, rel=0.1)

    def sigmoid(z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-z))

    before = calibration_metrics(sigmoid(overconfident), y)
    after = calibration_metrics(sigmoid(overconfident / t), y)
    assert after["nll"] < before["nll"] - 0.05
    assert after["ece"] < before["ece"]


def test_temperature_keeps_the_map_and_default_is_identity() -> None:
    model = torch.nn.Conv2d(1, 1, 1)

    class Wrapped(torch.nn.Module):
        def forward(self, signals: torch.Tensor, tx_pos: torch.Tensor | None = None) -> torch.Tensor:
            return model(signals[:, :1]).squeeze(1)

    inner = Wrapped()
    assert with_temperature(inner, 1.0) is inner
    scaled = with_temperature(inner, 2.5)
    assert isinstance(scaled, TemperatureScaled)
    x = torch.randn(2, 3, 5, 5)
    assert torch.allclose(scaled(x), inner(x) / 2.5)
    assert torch.equal(scaled(x) > 0, inner(x) > 0)
    with pytest.raises(ValueError):
        TemperatureScaled(inner, 0.0)


def test_checkpoint_temperature_round_trip(tmp_path: Path) -> None:
    model = create_model("threshold")
    hparams = {"model": "threshold", "model_kwargs": {}, "data_attrs": {}}
    old = save_checkpoint(tmp_path / "old.ckpt", model, hparams)
    before = load_checkpoint(old)  # a checkpoint from before calibration existed
    assert before.temperature == 1.0 and before.calibrated() is before.model
    for suffix in (".ckpt", ".safetensors"):
        new = write_with_hparams(old, tmp_path / f"new{suffix}", {**hparams, "calibration": {"temperature": 1.7}})
        loaded = load_checkpoint(new)
        assert loaded.temperature == pytest.approx(1.7)
        assert isinstance(loaded.calibrated(), TemperatureScaled)


def test_reliability_figure_draws_one_panel_per_model() -> None:
    rel = calibration_metrics(np.array([[[0.2, 0.8]]]), np.array([[[0, 1]]]))["reliability"]
    fig = reliability_figure({"a": rel, "b": rel})
    assert len(fig.axes) == 2


def test_exports_apply_the_temperature(tmp_path: Path) -> None:
    from tomoformer.export import example_inputs, export_model, load_program_metadata

    torch.manual_seed(0)
    kwargs = {"base_channels": 4, "depth": 1}
    model = create_model("unet", **kwargs).eval()
    hparams = {"model": "unet", "model_kwargs": kwargs, "data_attrs": {"cell_size_m": 2.0, "rx_height_m": 1.5}}
    plain = save_checkpoint(tmp_path / "u.ckpt", model, hparams)
    calibrated = write_with_hparams(plain, tmp_path / "c.ckpt", {**hparams, "calibration": {"temperature": 2.0}})
    program = torch.export.load(export_model(calibrated, "torchscript", tmp_path / "c.pt2", height=16, width=16))
    signals, tx_pos = example_inputs(2, 3, (16, 16), seed=1)
    with torch.no_grad():
        torch.testing.assert_close(
            program.module()(signals, tx_pos), model(signals, tx_pos) / 2.0, atol=1e-5, rtol=1e-4
        )
    assert load_program_metadata(tmp_path / "c.pt2")["temperature"] == 2.0
    assert load_checkpoint(export_model(calibrated, "safetensors", tmp_path / "c.safetensors")).temperature == 2.0
