"""`tomoformer pretrain`: streamed from the simulator end to end, and like `train` on a store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tomoformer.checkpoint import load_checkpoint
from tomoformer.cli import main

TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4}
COMMON = ["--max-epochs", "1", "--batch-size", "4", "--accelerator", "cpu", "--no-progress"]
MODEL = ["--model", "tomoformer_tiny", *[a for k, v in TINY.items() for a in ("--model-opt", f"{k}={v}")]]


def test_pretrain_stream_writes_loadable_checkpoint(tmp_path: Path) -> None:
    sim = tmp_path / "sim.yaml"
    sim.write_text(yaml.safe_dump({"size": 16, "frames": 3}))
    out = tmp_path / "run"
    args = ["pretrain", "--stream", "--sim-config", str(sim), "--set", "n_angles=32", "--samples-per-epoch", "8"]
    assert main([*args, "--val-samples", "4", "--out", str(out), *MODEL, *COMMON]) == 0
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["stream"]["sim_config"]["size"] == 16 and recorded["stream"]["sim_config"]["n_angles"] == 32
    assert recorded["stream"]["samples_per_epoch"] == 8 and recorded["model_kwargs"] == TINY
    assert (out / "metrics.csv").exists()
    loaded = load_checkpoint(out / "checkpoints" / "best.ckpt")
    assert loaded.name == "tomoformer_tiny" and TINY.items() <= loaded.model_kwargs.items()
    assert loaded.data_attrs["signal_unit"] == "path_gain_db"
    assert loaded.model(torch.randn(1, 3, 16, 16) - 80).shape == (1, 16, 16)


def test_pretrain_on_store_like_train(toy_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    assert main(["pretrain", "--data", str(toy_dataset), "--out", str(out), *MODEL, *COMMON]) == 0
    assert TINY.items() <= load_checkpoint(out / "checkpoints" / "best.ckpt").model_kwargs.items()


def test_pretrain_conflicting_sources_is_one_line_error(
    toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pretrain", "--stream", "--data", str(toy_dataset), "--out", str(tmp_path / "x")]) == 2
    assert main(["pretrain", "--data", str(toy_dataset), "--set", "size=16", "--out", str(tmp_path / "y")]) == 2
    assert main(["pretrain", "--stream", "--set", "nope=1", "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "--stream" in err[0] and "nope" in err[2]


def test_pretrain_objective_and_masking_come_from_yaml_and_are_recorded(toy_dataset: Path, tmp_path: Path) -> None:
    config = tmp_path / "masked.yaml"
    config.write_text(yaml.safe_dump({"objective": "masked", "mask_ratio": 0.25, "mask_mode": "patches"}))
    out = tmp_path / "masked"
    assert (
        main(["pretrain", "--config", str(config), "--data", str(toy_dataset), "--out", str(out), *MODEL, *COMMON]) == 0
    )
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert (recorded["objective"], recorded["mask_ratio"], recorded["mask_mode"]) == ("masked", 0.25, "patches")
    hparams = load_checkpoint(out / "checkpoints" / "best.ckpt").hparams
    assert (hparams["mask_ratio"], hparams["mask_mode"]) == (0.25, "patches")


@pytest.mark.parametrize(
    ("values", "named"),
    [({"mask_ratio": 1.0}, "mask_ratio"), ({"objective": "contrastive"}, "objective"), ({"stream": "yes"}, "stream")],
)
def test_pretrain_bad_yaml_option_is_one_line_error(
    values: dict, named: str, toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(values))
    assert main(["pretrain", "--config", str(config), "--data", str(toy_dataset), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]
    assert not (tmp_path / "x").exists()
