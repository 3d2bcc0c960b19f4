"""Numerics: any H and W in training, a non-finite loss stops the run (exit 2, no NaN checkpoint), and
predictions are never NaN."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import toy_arrays
from tomoformer.checkpoint import load_checkpoint, read_checkpoint
from tomoformer.cli import main
from tomoformer.data.datamodule import SignalMapDataset
from tomoformer.data.format import open_dataset, write_dataset
from tomoformer.errors import NumericsError
from tomoformer.models.registry import create_model
from tomoformer.tasks.guards import FiniteGuard
from tomoformer.tasks.inference import predict_probabilities
from tomoformer.tasks.mapping import MappingTask
from tomoformer.tasks.train import TrainConfig, run_training

SMALL = {
    "tomoformer_tiny": {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4},
    "unet": {"base_channels": 8},
    "convgru": {"hidden_channels": 8, "decoder_channels": 8},
}


def non_square_store(tmp_path: Path, h: int = 12, w: int = 16) -> Path:
    """The toy city cut to H x W (H != W): buildings still cost 20 dB, transmitters inside the grid."""
    arrays = toy_arrays(n=8, t=4, size=max(h, w))
    arrays["signals"] = arrays["signals"][..., :h, :w]
    arrays["buildings"] = arrays["buildings"][..., :h, :w]
    arrays["tx_pos"][..., 0] = np.clip(arrays["tx_pos"][..., 0], 0, h - 1)
    return write_dataset(tmp_path / "wide.zarr", arrays, {"cell_size_m": 2.0})


def tiny_config(data: Path, out: Path, model: str = "unet", **overrides) -> TrainConfig:
    options = dict(
        data=str(data),
        out=str(out),
        model=model,
        model_kwargs=SMALL[model],
        max_epochs=1,
        batch_size=4,
        progress=False,
        accelerator="cpu",
    )
    return TrainConfig(**{**options, **overrides})


@pytest.mark.parametrize("model", ["tomoformer_tiny", "unet", "convgru"])
def test_training_with_symmetry_augmentation_on_non_square_grids(model: str, tmp_path: Path) -> None:
    data = non_square_store(tmp_path)
    config = tiny_config(data, tmp_path / "run", model)
    assert config.augment.d4  # the default that used to crash on H != W
    result = run_training(config)
    assert np.isfinite(result.metrics["val_loss"])
    loaded = load_checkpoint(result.best_checkpoint)
    with torch.no_grad():
        assert loaded.model(torch.randn(2, 3, 12, 16) - 80).shape == (2, 12, 16)


def test_training_with_data_on_device_on_non_square_grids(tmp_path: Path) -> None:
    result = run_training(tiny_config(non_square_store(tmp_path, 16, 8), tmp_path / "run", data_on_device=True))
    assert np.isfinite(result.metrics["val_loss"])


def nan_loss_from(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make MappingTask's loss NaN from ``epoch`` on (as a diverging run would)."""
    original = MappingTask.loss

    def loss(self: MappingTask, logits: torch.Tensor, buildings: torch.Tensor) -> torch.Tensor:
        value = original(self, logits, buildings)
        return value * float("nan") if self.current_epoch >= epoch else value

    monkeypatch.setattr(MappingTask, "loss", loss)


def cli(*argv: str) -> tuple[int, list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue().strip().splitlines()


def test_nan_loss_exits_2_and_writes_no_checkpoint(
    toy_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nan_loss_from(monkeypatch, 0)
    out = tmp_path / "run"
    code, err = cli(
        *("train", "--data", str(toy_dataset), "--out", str(out), "--model", "unet", "--model-opt", "base_channels=8"),
        *("--max-epochs", "1", "--batch-size", "4", "--accelerator", "cpu", "--no-progress"),
    )
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("tomoformer: error: training stopped: the loss is nan"), err
    assert not list(out.rglob("*.ckpt"))


def test_nan_loss_later_keeps_the_last_finite_checkpoints(
    toy_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nan_loss_from(monkeypatch, 1)
    out = tmp_path / "run"
    with pytest.raises(NumericsError, match="epoch 1"):
        run_training(tiny_config(toy_dataset, out, max_epochs=3))
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(out / "checkpoints" / name, weights_only=True)
        assert checkpoint["epoch"] == 0
        assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


def test_deferred_check_never_saves_nan_weights(
    toy_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an accelerator the guard checks once per epoch instead of per step (no device synchronisation);
    the NaN weights of the diverged epoch still never reach a checkpoint."""
    original_setup = FiniteGuard.setup

    def deferred(self: FiniteGuard, trainer, pl_module, stage) -> None:
        original_setup(self, trainer, pl_module, stage)
        self._immediate = False

    monkeypatch.setattr(FiniteGuard, "setup", deferred)
    nan_loss_from(monkeypatch, 1)
    out = tmp_path / "run"
    with pytest.raises(NumericsError, match="non-finite during epoch 1"):
        run_training(tiny_config(toy_dataset, out, max_epochs=3))
    state = read_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_guard_refuses_to_save_non_finite_weights_or_validation_loss() -> None:
    guard = FiniteGuard()
    module = nn.Linear(2, 2)
    trainer = SimpleNamespace(world_size=1, current_epoch=3, sanity_checking=False, callback_metrics={})
    guard.on_save_checkpoint(trainer, module, {})  # finite: passes
    with torch.no_grad():
        module.weight[0, 0] = float("inf")
    with pytest.raises(NumericsError, match="weights became non-finite at epoch 3"):
        guard.on_save_checkpoint(trainer, module, {})
    trainer.callback_metrics = {"val_loss": torch.tensor(float("nan"))}
    with pytest.raises(NumericsError, match="validation loss is nan"):
        guard.on_validation_end(trainer, module)


class NanForSecondSample(nn.Module):
    def forward(self, signals: torch.Tensor, tx_pos: torch.Tensor | None = None) -> torch.Tensor:
        logits = torch.zeros(signals.shape[0], *signals.shape[-2:])
        logits[1] = float("nan")
        return logits


def test_inference_refuses_nan_probabilities(toy_dataset: Path) -> None:
    with open_dataset(toy_dataset) as source, pytest.raises(NumericsError, match=r"sample\(s\) 1 "):
        predict_probabilities(NanForSecondSample(), SignalMapDataset(source), batch_size=4)


@pytest.mark.parametrize("model", ["tomoformer_tiny", "unet", "convgru", "seednet", "threshold"])
def test_unmeasured_frames_give_finite_maps(model: str) -> None:
    torch.manual_seed(0)
    net = create_model(model, **SMALL.get(model, {})).eval()
    signals = torch.randn(2, 4, 12, 16) - 80
    signals[0] = float("nan")  # nothing measured at all
    signals[1, 1:3] = float("nan")  # two empty frames
    tx = torch.rand(2, 4, 3) * 10
    with torch.no_grad():
        for tx_pos in (None, tx):
            assert torch.isfinite(net(signals, tx_pos)).all()
