"""`tomoformer experts fit|evaluate|predict` end to end on a toy dataset, and fit killed mid-way then resumed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli.test_crash_resume import kill_when, run_cli
from tests.conftest import toy_arrays
from tomoformer.checkpoint import load_checkpoint, read_checkpoint
from tomoformer.cli import main
from tomoformer.data.format import write_dataset
from tomoformer.experts.clustering import ClusterFit

UNET = {"model": "unet", "model_kwargs": {"base_channels": 4, "depth": 1}}
GRU = {"model": "convgru", "model_kwargs": {"hidden_channels": 4, "decoder_channels": 4}}
CONFIG = {
    "data": "toy.zarr",
    "out": "run",
    "k": 2,
    "expert_models": [UNET, GRU],
    "epochs": 1,
    "global_epochs": 1,
    "batch_size": 4,
    "val_fraction": 0.25,
    "accelerator": "cpu",
    "progress": False,
    "seed": 3,
    "combine": "gate",
    "film": True,
    "aux": True,
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy dataset with two regimes of noise, a config, and one uninterrupted `experts fit` into run/."""
    tmp_path = tmp_path_factory.mktemp("experts")
    arrays = toy_arrays(n=16)
    arrays["signals"][8:] += np.random.default_rng(1).normal(0, 12, arrays["signals"][8:].shape)
    write_dataset(tmp_path / "toy.zarr", arrays, {"cell_size_m": 2.0})
    (tmp_path / "experts.yaml").write_text(json.dumps(CONFIG))  # JSON is YAML
    assert "IoU" in run_cli("experts", "fit", "--config", "experts.yaml", cwd=tmp_path).stdout
    return tmp_path


def test_fit_evaluate_predict(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    run = workdir / "run"
    for name in ("config.yaml", "clusters.npz", "stage1.ckpt", "model.ckpt", "metrics.json", "figures/clusters.png"):
        assert (run / name).is_file(), name
    with open(run / "metrics.csv", newline="") as f:
        rows = {r["scope"]: r for r in csv.DictReader(f)}
    assert "overall" in rows and {"cluster_0", "cluster_1"} & set(rows)
    assert 0.0 <= float(rows["overall"]["iou"]) <= 1.0
    fit = ClusterFit.from_arrays(dict(np.load(run / "clusters.npz", allow_pickle=False)))
    assert fit.k == 2 and np.bincount(fit.labels).min() >= 1
    hparams = read_checkpoint(run / "model.ckpt")["hyper_parameters"]
    assert hparams["model_kwargs"]["combine"] == "gate" and hparams["model_kwargs"]["film"] is True
    assert [e["model"] for e in hparams["model_kwargs"]["experts"]] == ["unet", "convgru"]

    assert main(["experts", "evaluate", "--config", "experts.yaml", "--data", "toy.zarr"]) == 0
    scores = json.loads((run / "evaluate" / "metrics.json").read_text())
    assert scores["n_samples"] == 16 and sum(v["n_samples"] for v in scores["per_cluster"].values()) == 16

    assert main(["experts", "predict", "--config", "experts.yaml", "--data", "toy.zarr", "--out", "pred.npz"]) == 0
    with np.load(workdir / "pred.npz", allow_pickle=False) as pred:
        probabilities, clusters = pred["probabilities"], pred["group"]
    assert probabilities.shape == (16, 16, 16) and set(np.unique(clusters)) <= {0, 1}
    # The combined model is a registry model: the generic `predict` gives the same probabilities.
    assert main(["predict", "--checkpoint", "run/model.ckpt", "--data", "toy.zarr", "--out", "plain.npz"]) == 0
    with np.load(workdir / "plain.npz", allow_pickle=False) as plain:
        np.testing.assert_allclose(plain["probabilities"], probabilities, atol=1e-5)


def test_user_errors_exit_2(workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(workdir)
    bads = (["--combine", "vote"], ["--clusterer", "spectral"], ["--expert-model", "no_such_model"])
    for bad in (*bads, ["--share-backbone"]):  # share_backbone without lora:R and init_checkpoint
        assert main(["experts", "fit", "--config", "experts.yaml", "--epochs", "1", *bad]) == 2, bad
    assert "error" in capsys.readouterr().err
    assert main(["experts", "evaluate", "--checkpoint", "missing.ckpt", "--data", "toy.zarr"]) == 2


def test_fit_killed_then_resumed_equals_straight_run(workdir: Path) -> None:
    common = ["experts", "fit", "--config", "experts.yaml"]
    # Killed once the second expert has a last.ckpt (while it or the global stage trains); the first is done.
    marker = workdir / "killed" / "experts" / "1" / "checkpoints" / "last.ckpt"
    kill_when([*common, "--out", "killed"], workdir, marker.exists)
    assert (workdir / "killed" / "experts" / "0" / "done.json").exists()
    assert not (workdir / "killed" / "model.ckpt").exists()
    run_cli(*common, "--out", "killed", "--resume", cwd=workdir)
    straight = load_checkpoint(workdir / "run" / "model.ckpt").model.state_dict()
    resumed = load_checkpoint(workdir / "killed" / "model.ckpt").model.state_dict()
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-4, atol=1e-5, msg=key)
    # No temporaries; the run folder's own marker (.tomoformer, tomoformer.outputs) is meant to stay.
    leftovers = [p for p in (workdir / "killed").rglob(".*") if p.is_file() and p.name != ".tomoformer"]
    assert leftovers == []
