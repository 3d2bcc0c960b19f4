"""Masked signal modelling: masks, learning without labels, checkpoints that fine-tune, and the CLI."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from tests.conftest import toy_arrays
from tomoformer.checkpoint import load_checkpoint
from tomoformer.cli import main
from tomoformer.data.format import write_dataset
from tomoformer.errors import ConfigError
from tomoformer.tasks.pretraining import MaskedSignalTask, mask_cells, masked_target

TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4}
MODEL_OPTS = ["--model", "tomoformer_tiny", *[a for k, v in TINY.items() for a in ("--model-opt", f"{k}={v}")]]
COMMON = ["--max-epochs", "1", "--batch-size", "4", "--accelerator", "cpu", "--no-progress"]


def _unlabelled(path: Path) -> Path:
    arrays = toy_arrays(n=8)
    del arrays["buildings"]
    return write_dataset(path, arrays, {"cell_size_m": 2.0})


def test_frame_mask_hides_requested_fraction_of_present_frames() -> None:
    signals = torch.randn(3, 4, 16, 16)
    signals[2, 3] = float("nan")  # a padded (absent) frame is never chosen
    hidden = mask_cells(signals, 0.5, "frames", 4, torch.Generator().manual_seed(0))
    per_frame = hidden.flatten(2)
    assert (per_frame.all(2) | ~per_frame.any(2)).all()  # whole frames
    assert per_frame.all(2).sum(1).tolist() == [2, 2, 2] and not hidden[2, 3].any()


def test_patch_mask_hides_requested_fraction_of_patches_in_every_frame() -> None:
    signals = torch.randn(2, 4, 16, 16)
    hidden = mask_cells(signals, 0.25, "patches", 4, torch.Generator().manual_seed(0))
    assert (hidden == hidden[:, :1]).all()  # the same cells in every frame
    assert hidden.float().mean(dim=(1, 2, 3)).tolist() == [0.25, 0.25]
    blocks = hidden[:, 0].reshape(2, 4, 4, 4, 4).float().mean(dim=(2, 4))
    assert ((blocks == 0) | (blocks == 1)).all()  # whole patches


def test_target_only_counts_hidden_valid_cells() -> None:
    signals = torch.randn(1, 2, 4, 4) * 10 - 80
    signals[0, 1, 0, 0] = float("nan")
    hidden = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    hidden[0, 1] = True
    target, weight = masked_target(signals, hidden)
    assert weight[0, 0, 0] == 0 and weight.sum() == 15
    assert torch.isfinite(target).all()


def test_non_tomoformer_model_is_config_error() -> None:
    with pytest.raises(ConfigError, match="TomoFormer"):
        MaskedSignalTask(model="threshold")
    with pytest.raises(ConfigError, match="mask_mode"):
        MaskedSignalTask(model_kwargs=TINY, mask_mode="pixels")


@pytest.mark.parametrize("mode", ["frames", "patches"])
def test_loss_is_finite_and_falls_without_labels(mode: str) -> None:
    L.seed_everything(0, verbose=False)
    arrays = toy_arrays(n=4)
    batch = {"signals": torch.from_numpy(arrays["signals"])}  # no 'buildings', no 'tx_pos'
    task = MaskedSignalTask(model_kwargs=TINY, lr=3e-3, mask_mode=mode)
    optimizer = torch.optim.AdamW(task.parameter_groups(), lr=3e-3)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(task.parameters()))
    fixed = torch.Generator().manual_seed(1)
    with torch.no_grad():
        before = float(task.masked_loss(batch, fixed.manual_seed(1)))
    for _ in range(30):
        loss = task.masked_loss(batch)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(task.masked_loss(batch, fixed.manual_seed(1)))
    assert after < 0.8 * before


def test_checkpoint_loads_into_plain_registry_model(tmp_path: Path) -> None:
    task = MaskedSignalTask(model_kwargs=TINY)
    path = tmp_path / "masked.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    assert any(k.startswith("recon.") for k in task.state_dict())
    loaded = load_checkpoint(path)
    assert loaded.name == "tomoformer_tiny" and TINY.items() <= loaded.model_kwargs.items()
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, task.model.state_dict()[key])


def test_cli_masked_pretrain_then_finetune(toy_dataset: Path, tmp_path: Path) -> None:
    data = _unlabelled(tmp_path / "unlabelled.npz")
    out = tmp_path / "masked"
    args = ["pretrain", "--objective", "masked", "--data", str(data), "--out", str(out), *MODEL_OPTS, *COMMON]
    assert main([*args, "--mask-mode", "patches"]) == 0
    best = out / "checkpoints" / "best.ckpt"
    loaded = load_checkpoint(best)
    assert TINY.items() <= loaded.model_kwargs.items() and loaded.hparams["mask_mode"] == "patches"
    assert loaded.model(torch.randn(1, 3, 16, 16) - 80).shape == (1, 16, 16)
    metrics = (out / "metrics.csv").read_text().splitlines()
    column = metrics[0].split(",").index("val_loss")
    assert all(np.isfinite(float(row.split(",")[column])) for row in metrics[1:] if row.split(",")[column])
    tuned = tmp_path / "tuned"
    finetune = ["finetune", "--from", str(best), "--policy", "full", "--data", str(toy_dataset), "--out", str(tuned)]
    assert main([*finetune, *COMMON]) == 0
    assert TINY.items() <= load_checkpoint(tuned / "checkpoints" / "best.ckpt").model_kwargs.items()


def test_cli_masked_refuses_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "--objective", "masked", "--stream", "--out", str(tmp_path / "x")]) == 2
    assert "--objective masked" in capsys.readouterr().err
