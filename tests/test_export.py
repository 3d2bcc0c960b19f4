"""Export to ONNX, torch.export (.pt2) and safetensors: files reproduce the PyTorch model on new B and T."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from tests.conftest import toy_arrays
from tomoformer.checkpoint import load_checkpoint, save_checkpoint
from tomoformer.data.datamodule import SignalMapDataset, collate
from tomoformer.data.format import open_dataset, write_dataset
from tomoformer.errors import ConfigError, DataError
from tomoformer.export import (
    OnnxPredictor,
    example_inputs,
    export_model,
    load_program_metadata,
)
from tomoformer.models.registry import create_model

SIZE = 16
TINY: dict[str, dict[str, Any]] = {
    "tomoformer_tiny": {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4},
    "unet": {"base_channels": 4, "depth": 1},
}
DATA_ATTRS = {"cell_size_m": 2.0, "rx_height_m": 1.5}


def make_checkpoint(path: Path, name: str) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = create_model(name, **TINY.get(name, {})).eval()
    hparams = {"model": name, "model_kwargs": TINY.get(name, {}), "data_attrs": DATA_ATTRS}
    return save_checkpoint(path, model, hparams), model


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("onnx")
    checkpoint, model = make_checkpoint(folder / "m.ckpt", "tomoformer_tiny")
    return export_model(checkpoint, "onnx", folder / "m.onnx", height=SIZE, width=SIZE), model


def test_onnx_matches_pytorch_on_new_batch_and_frames(onnx_export: tuple[Path, torch.nn.Module]) -> None:
    path, model = onnx_export
    predictor = OnnxPredictor(path)
    for batch, frames in [(1, 1), (4, 7)]:  # exported with B=2, T=3
        signals, tx_pos = example_inputs(batch, frames, (SIZE, SIZE), seed=5)
        with torch.no_grad():
            expected = model(signals, tx_pos).numpy()
        got = predictor(signals.numpy(), tx_pos.numpy())
        assert got.shape == (batch, SIZE, SIZE)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    # tx_pos None (all NaN) equals the model without positions.
    signals, _ = example_inputs(2, 3, (SIZE, SIZE), seed=6)
    with torch.no_grad():
        expected = model(signals).numpy()
    np.testing.assert_allclose(predictor(signals.numpy()), expected, atol=1e-4, rtol=1e-4)


def test_onnx_matches_pytorch_on_a_dataset_sample(onnx_export: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, model = onnx_export
    arrays = toy_arrays(n=3, t=6)  # T differs from the export's
    data = write_dataset(tmp_path / "toy.npz", arrays, DATA_ATTRS)
    with open_dataset(data) as source:
        batch = collate([SignalMapDataset(source)[i] for i in range(3)])
    with torch.no_grad():
        expected = model(batch["signals"], batch["tx_pos"]).numpy()
    predictor = OnnxPredictor(path)
    np.testing.assert_allclose(predictor(batch["signals"].numpy(), batch["tx_pos"].numpy()), expected, atol=1e-4)
    # The file's own attrs convert dataset positions exactly like the dataset does.
    np.testing.assert_allclose(predictor.model_tx_pos(arrays["tx_pos"][:3]), batch["tx_pos"].numpy())


def test_onnx_carries_metadata_and_named_dynamic_axes(onnx_export: tuple[Path, torch.nn.Module]) -> None:
    path, _ = onnx_export
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["tomoformer.model"] == "tomoformer_tiny"
    assert float(props["tomoformer.cell_size_m"]) == 2.0 and float(props["tomoformer.rx_height_m"]) == 1.5
    predictor = OnnxPredictor(path)
    assert predictor.metadata["model_kwargs"] == TINY["tomoformer_tiny"]
    assert predictor.size == (SIZE, SIZE)
    shapes = {i.name: i.shape for i in predictor.session.get_inputs()}
    assert shapes == {"signals": ["B", "T", SIZE, SIZE], "tx_pos": ["B", "T", 3]}
    assert [o.name for o in predictor.session.get_outputs()] == ["logits"]
    with pytest.raises(DataError, match="expects signals"):
        predictor(np.zeros((1, 2, SIZE + 1, SIZE), np.float32))


def test_torch_export_program_round_trip(tmp_path: Path) -> None:
    checkpoint, model = make_checkpoint(tmp_path / "u.ckpt", "unet")
    out = export_model(checkpoint, "torchscript", tmp_path / "u.pt2", height=SIZE, width=SIZE)
    program = torch.export.load(out).module()
    signals, tx_pos = example_inputs(3, 6, (SIZE, SIZE), seed=3)
    with torch.no_grad():
        torch.testing.assert_close(program(signals, tx_pos), model(signals, tx_pos), atol=1e-5, rtol=1e-4)
    assert load_program_metadata(out)["model"] == "unet"


def test_safetensors_round_trip(tmp_path: Path) -> None:
    checkpoint, model = make_checkpoint(tmp_path / "u.ckpt", "unet")
    out = export_model(checkpoint, "safetensors", tmp_path / "u.safetensors")
    loaded = load_checkpoint(out)
    assert loaded.name == "unet" and loaded.data_attrs == DATA_ATTRS
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)


def test_fitted_models_and_bad_options_are_refused(tmp_path: Path) -> None:
    checkpoint, _ = make_checkpoint(tmp_path / "t.ckpt", "threshold")
    with pytest.raises(ConfigError, match="fitted"):
        export_model(checkpoint, "onnx", tmp_path / "t.onnx")
    with pytest.raises(ConfigError, match="unknown export format"):
        export_model(checkpoint, "tflite", tmp_path / "t.tflite")
    with pytest.raises(ConfigError, match=r"must end in \.onnx"):
        export_model(checkpoint, "onnx", tmp_path / "t.pt2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.ckpt"]
