"""Checkpoints load without unpickling code, rebuild their model by name, and refuse what they cannot trust."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from tomoformer.checkpoint import load_checkpoint, save_checkpoint
from tomoformer.errors import CheckpointError
from tomoformer.models.registry import create_model

HPARAMS = {"model": "unet", "model_kwargs": {"base_channels": 4, "depth": 1}}


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_round_trip_rebuilds_the_same_model(tmp_path: Path, suffix: str) -> None:
    model = create_model("unet", base_channels=4, depth=1)
    path = save_checkpoint(tmp_path / f"m{suffix}", model, HPARAMS)
    loaded = load_checkpoint(path)
    assert loaded.name == "unet" and loaded.model_kwargs == HPARAMS["model_kwargs"]
    x = torch.randn(1, 3, 8, 8) - 70
    torch.testing.assert_close(loaded.model(x), model.eval()(x))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    # An arbitrary class instance needs unpickling code: weights_only loading must refuse it.
    torch.save({"state_dict": {}, "hyper_parameters": {"model": "unet"}, "extra": argparse.Namespace(x=1)}, path)
    with pytest.raises(CheckpointError, match=r"refused: .*argparse\.Namespace"):
        load_checkpoint(path)


def test_wrong_model_missing_file_and_garbage(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.ckpt", create_model("unet", base_channels=4, depth=1), HPARAMS)
    with pytest.raises(CheckpointError, match="holds model 'unet', not 'seednet'"):
        load_checkpoint(path, expect_model="seednet")
    mismatched = torch.load(path, weights_only=True)
    mismatched["hyper_parameters"]["model_kwargs"] = {"base_channels": 8, "depth": 1}
    torch.save(mismatched, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.ckpt")
