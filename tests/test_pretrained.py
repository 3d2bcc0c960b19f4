"""Shipped pretrained weights: packaging a checkpoint, listing, the condition checks, and the CLI paths that use
them (`models --pretrained`, `predict`/`evaluate --pretrained`, `finetune --from NAME`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tomoformer.pretrained as pretrained
from tests.conftest import toy_arrays
from tomoformer.checkpoint import load_checkpoint, save_checkpoint
from tomoformer.cli import main
from tomoformer.data.format import write_dataset
from tomoformer.errors import ConfigError, DataError, OutputError
from tomoformer.models.registry import create_model

TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4}
MAX_SHIPPED_BYTES = 10 * 1024 * 1024


def _card(name: str = "tiny_test") -> pretrained.ModelCard:
    return pretrained.ModelCard(
        name=name,
        model="tomoformer_tiny",
        description="a test model",
        cell_size_m=2.0,
        frequency_hz=3.5e9,
        trained_on="nothing",
        command="pytest",
        figures={"iou": 0.5},
    )


@pytest.fixture
def shelf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package folder holding one packaged tiny model, in place of the real one."""
    torch.manual_seed(0)
    model = create_model("tomoformer_tiny", **TINY)
    save_checkpoint(tmp_path / "trained.ckpt", model, {"model": "tomoformer_tiny", "model_kwargs": TINY})
    folder = tmp_path / "shelf"
    pretrained.package_checkpoint(tmp_path / "trained.ckpt", _card(), folder)
    monkeypatch.setattr(pretrained, "HERE", folder)
    return folder


def test_packaged_weights_are_half_precision_and_predict_like_the_checkpoint(shelf: Path, tmp_path: Path) -> None:
    original = load_checkpoint(tmp_path / "trained.ckpt").model
    shipped = load_checkpoint(pretrained.card("tiny_test").weights).model
    signals = torch.from_numpy(toy_arrays(n=2)["signals"])
    with torch.no_grad():
        a, b = torch.sigmoid(original(signals)), torch.sigmoid(shipped(signals))
    assert torch.allclose(a, b, atol=2e-2)  # float16 weights: close, not equal
    assert (shelf / "tiny_test.safetensors").stat().st_size < (tmp_path / "trained.ckpt").stat().st_size


def test_listing_and_lookup(shelf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert [c.name for c in pretrained.available()] == ["tiny_test"]
    assert main(["models", "--pretrained"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].split()[0] == "tiny_test" and "tomoformer_tiny" in lines[0]
    with pytest.raises(ConfigError, match="no shipped pretrained model 'nope' \\(shipped: tiny_test\\)"):
        pretrained.card("nope")
    assert pretrained.resolve("tiny_test") == str(shelf / "tiny_test.safetensors")
    assert pretrained.resolve("some/file.ckpt") == "some/file.ckpt"


@pytest.mark.parametrize(
    ("attrs", "refused"),
    [
        ({"cell_size_m": 2.1, "frequency_hz": 3.6e9}, None),
        ({}, None),
        ({"cell_size_m": 5.0}, "cell_size_m is 5 m"),
        ({"frequency_hz": 28e9}, "frequency_hz is 28 GHz"),
    ],
)
def test_conditions_far_from_the_training_ones_are_refused(attrs: dict, refused: str | None) -> None:
    if refused is None:
        pretrained.check_conditions(_card(), attrs, "x.zarr")
    else:
        with pytest.raises(DataError, match=f"x.zarr: {refused}.*finetune --from tiny_test"):
            pretrained.check_conditions(_card(), attrs, "x.zarr")


def test_predict_evaluate_and_finetune_take_a_shipped_name(shelf: Path, tmp_path: Path) -> None:
    arrays = toy_arrays(n=6)
    arrays["signals"][:, :, :4, :4] = np.nan  # unmeasured cells
    del arrays["tx_pos"]  # transmitter positions are optional
    write_dataset(tmp_path / "d.zarr", arrays, {"cell_size_m": 2.0})
    assert (
        main(
            [
                "predict",
                "--pretrained",
                "tiny_test",
                "--data",
                str(tmp_path / "d.zarr"),
                "--out",
                str(tmp_path / "p.npz"),
            ]
        )
        == 0
    )
    with np.load(tmp_path / "p.npz") as predictions:
        probabilities = predictions["probabilities"]
    assert probabilities.shape == (6, 16, 16) and np.isfinite(probabilities).all()
    out = tmp_path / "ev"
    assert main(["evaluate", "--pretrained", "tiny_test", "--data", str(tmp_path / "d.zarr"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["iou"] <= 1
    ft = ["finetune", "--from", "tiny_test", "--data", str(tmp_path / "d.zarr"), "--out", str(tmp_path / "ft")]
    assert main([*ft, "--max-steps", "1", "--batch-size", "2", "--accelerator", "cpu", "--no-progress"]) == 0
    assert "tiny_test.safetensors" in (tmp_path / "ft" / "config.yaml").read_text()  # the run records its source
    assert (tmp_path / "ft" / "checkpoints" / "last.ckpt").is_file()


def test_predict_refuses_data_at_another_cell_size(shelf: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_dataset(tmp_path / "d.zarr", toy_arrays(n=2), {"cell_size_m": 10.0})
    args = [
        "predict",
        "--pretrained",
        "tiny_test",
        "--data",
        str(tmp_path / "d.zarr"),
        "--out",
        str(tmp_path / "p.npz"),
    ]
    assert main(args) == 2
    assert "cell_size_m is 10 m" in capsys.readouterr().err
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("card", pretrained.available(), ids=lambda c: c.name)
def test_every_shipped_model_fits_loads_and_maps(card: pretrained.ModelCard) -> None:
    assert card.weights.stat().st_size <= MAX_SHIPPED_BYTES
    assert card.figures and card.command and card.trained_on
    loaded = load_checkpoint(card.weights)
    assert loaded.name == card.model
    signals = torch.from_numpy(toy_arrays(n=2)["signals"])  # any T, any size
    with torch.no_grad():
        probabilities = torch.sigmoid(loaded.model(signals))
    assert probabilities.shape == (2, 16, 16) and torch.isfinite(probabilities).all()


def test_packaging_refuses_to_replace_a_shipped_model_without_overwrite(shelf: Path, tmp_path: Path) -> None:
    before = (shelf / "tiny_test.safetensors").read_bytes()
    with pytest.raises(OutputError, match=r"tiny_test\.safetensors: exists"):
        pretrained.package_checkpoint(tmp_path / "trained.ckpt", _card(), shelf)
    assert (shelf / "tiny_test.safetensors").read_bytes() == before
    pretrained.package_checkpoint(tmp_path / "trained.ckpt", _card(), shelf, overwrite=True)
    assert load_checkpoint(pretrained.card("tiny_test").weights).model is not None
