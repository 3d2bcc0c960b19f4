"""A training run end to end: run folder, checkpoints that load safely, resume, evaluate and predict."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tomoformer.checkpoint import load_checkpoint
from tomoformer.cli import main
from tomoformer.tasks.mapping import MappingTask
from tomoformer.tasks.train import TrainConfig, run_training


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4}


def test_train_writes_run_folder_and_loadable_checkpoints(toy_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = TrainConfig(
        data=str(toy_dataset),
        out=str(out),
        model="tomoformer_tiny",
        model_kwargs=TINY,
        max_epochs=2,
        batch_size=4,
        progress=False,
        accelerator="cpu",
    )
    result = run_training(config)
    for name in (
        "config.yaml",
        "metrics.csv",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "figures/curves.png",
    ):
        assert (out / name).is_file(), name
    assert yaml.safe_load((out / "config.yaml").read_text())["model_kwargs"] == TINY
    columns = set(read_csv(out / "metrics.csv")[0])
    assert {"train_loss", "val_loss", "val_iou"} <= columns
    assert 0.0 <= result.metrics["val_iou"] <= 1.0
    loaded = load_checkpoint(result.best_checkpoint)
    assert loaded.name == "tomoformer_tiny" and TINY.items() <= loaded.model_kwargs.items()
    logits = loaded.model(torch.randn(1, 3, 16, 16) - 80)
    assert logits.shape == (1, 16, 16)


def test_validation_every_n_steps_across_epochs(toy_dataset: Path, tmp_path: Path) -> None:
    # toy_dataset: 16 samples, 20 % validation -> 13 training samples, 4 steps of batch 4 per epoch
    common = dict(data=str(toy_dataset), model="unet", model_kwargs={"base_channels": 4, "depth": 1}, batch_size=4)
    config = TrainConfig(out=str(tmp_path / "r"), max_steps=10, val_every_steps=3, progress=False, **common)
    run_training(config)
    steps = [int(r["step"]) for r in read_csv(tmp_path / "r" / "metrics.csv") if r.get("val_iou")]
    assert steps == [2, 5, 8]  # after steps 3, 6 and 9 (Lightning logs the step index), not at epoch ends
    assert (tmp_path / "r" / "checkpoints" / "best.ckpt").is_file()


def test_resume_continues_from_last_checkpoint(
    toy_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = dict(
        data=str(toy_dataset),
        model="unet",
        batch_size=4,
        progress=False,
        accelerator="cpu",
        model_kwargs={"base_channels": 8},
        max_epochs=2,
    )
    straight = run_training(TrainConfig(out=str(tmp_path / "a"), **common))

    original = MappingTask.on_train_epoch_start

    def crash_in_second_epoch(self: MappingTask) -> None:
        if self.current_epoch == 1:
            raise RuntimeError("killed")
        original(self)

    monkeypatch.setattr(MappingTask, "on_train_epoch_start", crash_in_second_epoch)
    with pytest.raises(RuntimeError, match="killed"):
        run_training(TrainConfig(out=str(tmp_path / "b"), **common))
    monkeypatch.setattr(MappingTask, "on_train_epoch_start", original)
    resumed = run_training(TrainConfig(out=str(tmp_path / "b"), resume=True, **common))
    assert resumed.metrics["val_loss"] == pytest.approx(straight.metrics["val_loss"], rel=1e-5)
    epochs = {int(row["epoch"]) for row in read_csv(tmp_path / "b" / "metrics.csv") if row["val_loss"]}
    assert epochs == {0, 1}


def test_last_checkpoint_is_the_last_epoch_even_without_improvement(toy_dataset: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        data=str(toy_dataset),
        out=str(tmp_path / "run"),
        model="unet",
        model_kwargs={"base_channels": 4, "depth": 1},
        max_epochs=3,
        batch_size=4,
        lr=0.0,  # nothing changes, so best.ckpt is never improved on after the first epoch
        progress=False,
        accelerator="cpu",
    )
    run_training(config)
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert best["epoch"] == 0
    assert last["epoch"] == 2 and last["global_step"] == 3 * best["global_step"]


def test_same_seed_same_numbers(toy_dataset: Path, tmp_path: Path) -> None:
    common = dict(
        data=str(toy_dataset),
        model="tomoformer_tiny",
        model_kwargs=TINY,
        batch_size=4,
        max_epochs=1,
        progress=False,
        accelerator="cpu",
        seed=3,
    )
    a = run_training(TrainConfig(out=str(tmp_path / "a"), **common))
    b = run_training(TrainConfig(out=str(tmp_path / "b"), **common))
    assert a.metrics == b.metrics


def test_cli_train_evaluate_predict(toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": "tomoformer_tiny",
                "model_kwargs": TINY,
                "batch_size": 4,
                "max_epochs": 5,
                "augment": {"d4": True},
            }
        )
    )
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--data",
                str(toy_dataset),
                "--out",
                str(run),
                "--max-epochs",
                "1",
                "--frames",
                "3",
                "--no-progress",
                "--accelerator",
                "cpu",
            ]
        )
        == 0
    )
    assert yaml.safe_load((run / "config.yaml").read_text())["max_epochs"] == 1
    ckpt = run / "checkpoints" / "best.ckpt"
    report = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(ckpt),
                "--model",
                "threshold",
                "--fit-data",
                str(toy_dataset),
                "--data",
                str(toy_dataset),
                "--out",
                str(report),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    metrics = yaml.safe_load((report / "metrics.json").read_text())
    assert set(metrics) == {"tomoformer_tiny", "threshold"}
    assert {"iou", "f1", "precision", "recall", "accuracy", "per_group"} <= set(metrics["threshold"])
    html = (report / "report.html").read_text()
    assert "tomoformer_tiny" in html and "data:image/png;base64" in html

    pred = tmp_path / "pred.npz"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(ckpt),
                "--data",
                str(toy_dataset),
                "--out",
                str(pred),
                "--png",
                str(tmp_path / "png"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    with np.load(pred) as f:
        assert f["probabilities"].shape == (16, 16, 16) and f["probabilities"].dtype == np.float32
        assert f["buildings"].dtype == np.uint8
        np.testing.assert_array_equal(f["buildings"], (f["probabilities"] > 0.5).astype(np.uint8))
    assert len(list((tmp_path / "png").glob("*.png"))) == 16


def test_bad_options_are_one_line_errors(toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        ["train", "--data", str(toy_dataset), "--model", "nope", "--out", str(tmp_path / "x")],
        ["train", "--data", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "x")],
        ["evaluate", "--checkpoint", str(tmp_path / "none.ckpt"), "--data", str(toy_dataset), "--out", "x"],
        [
            "predict",
            "--checkpoint",
            str(toy_dataset),
            "--data",
            str(toy_dataset),
            "--out",
            str(tmp_path / "p.txt"),
        ],
    ]
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("max_epochs: 1\nwarp_speed: 9\n")
    cases.append(["train", "--config", str(bad_yaml), "--data", str(toy_dataset), "--out", str(tmp_path / "y")])
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("tomoformer: error:"), (argv, err)
