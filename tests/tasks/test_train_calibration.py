"""Training ends by fitting a temperature on the validation split and storing it in best.ckpt."""

from __future__ import annotations

from pathlib import Path

import pytest

from tomoformer.checkpoint import load_checkpoint
from tomoformer.tasks.config import TrainConfig
from tomoformer.tasks.train import run_training

TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4}


def test_best_checkpoint_carries_a_fitted_temperature(toy_dataset: Path, tmp_path: Path, capsys) -> None:
    config = TrainConfig(
        data=str(toy_dataset),
        out=str(tmp_path / "run"),
        model="tomoformer_tiny",
        model_kwargs=TINY,
        max_epochs=1,
        batch_size=4,
        progress=False,
        accelerator="cpu",
    )
    result = run_training(config)
    loaded = load_checkpoint(result.best_checkpoint)
    record = loaded.hparams["calibration"]
    assert record["method"] == "temperature" and record["fitted_on"] == "validation split"
    assert record["n_samples"] > 0
    assert loaded.temperature == pytest.approx(record["temperature"]) and loaded.temperature > 0
    assert record["nll_after"] <= record["nll_before"] + 1e-9
    assert "calibrated best.ckpt" in capsys.readouterr().out
