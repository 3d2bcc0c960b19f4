"""Shared fixtures of the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tomoformer.checkpoint import save_checkpoint
from tomoformer.models.registry import create_model

TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """An untrained tiny tomoformer_tiny checkpoint (seeded): enough to run predict, calibrate and plan."""
    torch.manual_seed(0)
    model = create_model("tomoformer_tiny", **TINY)
    return save_checkpoint(tmp_path / "tiny.ckpt", model, {"model": "tomoformer_tiny", "model_kwargs": TINY})
