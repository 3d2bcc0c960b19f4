"""`predict --uncertainty`, `calibrate` and the calibration scores of `evaluate`, end to end on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from tomoformer.checkpoint import load_checkpoint
from tomoformer.cli import main


def test_predict_writes_uncertainty_and_pictures(checkpoint: Path, toy_dataset: Path, tmp_path: Path) -> None:
    out, png = tmp_path / "pred.zarr", tmp_path / "png"
    args = ["predict", "--checkpoint", str(checkpoint), "--data", str(toy_dataset), "--out", str(out)]
    assert main([*args, "--uncertainty", "--png", str(png)]) == 0
    group = zarr.open_group(str(out), mode="r")
    u = np.asarray(group["uncertainty"])
    assert u.shape == np.asarray(group["probabilities"]).shape == (16, 16, 16)
    assert u.dtype == np.float32 and np.all((u >= 0) & (u <= 1))
    assert len(list(png.glob("*.png"))) == 16
    plain = tmp_path / "plain.zarr"
    assert main(["predict", "--checkpoint", str(checkpoint), "--data", str(toy_dataset), "--out", str(plain)]) == 0
    assert "uncertainty" not in zarr.open_group(str(plain), mode="r")


def test_calibrate_then_evaluate(checkpoint: Path, toy_dataset: Path, tmp_path: Path, capsys) -> None:
    calibrated = tmp_path / "calibrated.ckpt"
    args = ["calibrate", "--checkpoint", str(checkpoint), "--data", str(toy_dataset), "--out", str(calibrated)]
    assert main(args) == 0
    record = load_checkpoint(calibrated).hparams["calibration"]
    assert record["method"] == "temperature" and record["nll_after"] <= record["nll_before"] + 1e-9
    assert load_checkpoint(calibrated).temperature == pytest.approx(record["temperature"])
    assert main(args) == 2  # an existing output is refused without --overwrite
    assert "exists" in capsys.readouterr().err
    out = tmp_path / "eval"
    ev = ["evaluate", "--checkpoint", str(checkpoint), "--checkpoint", str(calibrated)]
    assert main([*ev, "--data", str(toy_dataset), "--out", str(out), "--figures", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    scores = list(metrics.values())
    assert all({"ece", "brier", "nll"} <= set(m) for m in scores)
    assert min(m["nll"] for m in scores) == pytest.approx(record["nll_after"], abs=1e-4)
    assert "reliability" in (out / "report.html").read_text()


def test_uncertainty_with_onnx_is_refused(toy_dataset: Path, tmp_path: Path, capsys) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"")
    args = ["predict", "--onnx", str(onnx), "--data", str(toy_dataset), "--out", str(tmp_path / "p.zarr")]
    assert main([*args, "--uncertainty"]) == 2
    assert "--uncertainty" in capsys.readouterr().err


def test_evaluate_scores_the_uncertainty(checkpoint: Path, toy_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(toy_dataset), "--out", str(out)]
    assert main([*args, "--figures", "0", "--uncertainty"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["uncertainty_auroc"] <= 1.0
    curve = metrics["risk_coverage"]
    assert [row["coverage"] for row in curve] == pytest.approx([0.1 * i for i in range(1, 11)])
    assert curve[-1]["iou"] == pytest.approx(metrics["iou"], abs=1e-6)
    assert curve[-1]["n_cells"] == 16 * 16 * 16
    assert "risk-coverage" in (out / "report.html").read_text()
