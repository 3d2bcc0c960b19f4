"""Checkpoints written before the architecture move (tests/fixtures/pre_move, made by its make.py at commit
630215e) still load with :func:`load_checkpoint` and compute the same logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tomoformer.checkpoint import load_checkpoint, read_checkpoint
from tomoformer.models.registry import create_model
from tomoformer.tasks.policy import apply_policy

FIXTURES = Path(__file__).parent / "fixtures" / "pre_move"


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "expected.npz", allow_pickle=False) as data:
        return dict(data)


def _logits(model: torch.nn.Module, expected: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(expected["signals"]), torch.from_numpy(expected["tx_pos"])).numpy()


@pytest.mark.parametrize(
    ("file", "name", "key"),
    [
        ("unet.ckpt", "unet", "unet"),
        ("tomoformer_lora.ckpt", "tomoformer_tiny", "tomoformer_lora"),
        ("experts_shared_lora.ckpt", "experts", "experts_shared_lora"),
    ],
)
def test_pre_move_checkpoint_loads_with_same_logits(
    file: str, name: str, key: str, expected: dict[str, np.ndarray]
) -> None:
    loaded = load_checkpoint(FIXTURES / file, expect_model=name)
    assert not loaded.model.training
    np.testing.assert_allclose(_logits(loaded.model, expected), expected[key], rtol=1e-5, atol=1e-5)


def test_pre_move_lora_adapters_restore_into_a_lora_model(expected: dict[str, np.ndarray]) -> None:
    # What a resumed lora:2 run does: the unmerged adapter state must fit the adapters lora:2 injects today.
    checkpoint = read_checkpoint(FIXTURES / "tomoformer_lora.ckpt")
    hparams = checkpoint["hyper_parameters"]
    model = apply_policy(create_model(hparams["model"], **hparams["model_kwargs"]), "lora:2")
    state = {k.removeprefix("model."): v for k, v in checkpoint["lora_state_dict"].items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    np.testing.assert_allclose(_logits(model, expected), expected["tomoformer_lora"], rtol=1e-5, atol=1e-5)
