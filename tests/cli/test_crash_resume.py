"""SIGKILL in the middle of `simulate`, `train`, `finetune` and `classify`, then `--resume`: the result equals an
uninterrupted run (`experts fit`: tests/cli/test_experts_cli.py)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import toy_arrays
from tomoformer.data.format import open_dataset, validate, write_dataset

# `python -m tomoformer.cli` needs a __main__.py; this runs the same entry point as the console script.
CLI = [sys.executable, "-c", "import sys; from tomoformer.cli import main; sys.exit(main())"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
SIM = ["--n", "40", "--chunk", "2", "--frames", "3", "--size", "16", "--seed", "5", "--no-progress"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*CLI, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def kill_when(args: list[str], cwd: Path, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    """Start the CLI, SIGKILL it as soon as ``ready()`` holds; fail if it finished first."""
    proc = subprocess.Popen([*CLI, *args], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "never reached the kill point"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def n_written(store: Path) -> int:
    try:
        return int(json.loads((store / "zarr.json").read_text())["attributes"]["n_written"])
    except (OSError, ValueError, KeyError):
        return 0  # not created yet, or caught mid-write


def read_all(path: Path) -> dict[str, np.ndarray]:
    with open_dataset(path) as ds:
        return {key: ds.read(key, slice(None)) for key in ds.arrays}


def test_simulate_killed_then_resumed_equals_straight_run(tmp_path: Path) -> None:
    run_cli("simulate", "--out", "straight.zarr", *SIM, cwd=tmp_path)
    partial = tmp_path / ".killed.partial.zarr"
    kill_when(["simulate", "--out", "killed.zarr", *SIM], tmp_path, lambda: n_written(partial) >= 6)
    assert not (tmp_path / "killed.zarr").exists()
    assert 6 <= n_written(partial) < 40
    assert any("incomplete" in p for p in validate(partial))
    run_cli("simulate", "--out", "killed.zarr", *SIM, "--resume", cwd=tmp_path)
    assert validate(tmp_path / "killed.zarr") == [] and not partial.exists()
    straight, resumed = read_all(tmp_path / "straight.zarr"), read_all(tmp_path / "killed.zarr")
    assert straight.keys() == resumed.keys()
    for key in straight:
        np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)


def last_epoch_val_loss(run: Path) -> tuple[int, float]:
    with open(run / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_loss")]
    last = max(rows, key=lambda r: int(r["epoch"]))
    return int(last["epoch"]), float(last["val_loss"])


def test_train_killed_then_resumed_equals_straight_run(tmp_path: Path) -> None:
    write_dataset(tmp_path / "toy.zarr", toy_arrays(n=12), {"cell_size_m": 2.0})
    config = {
        "data": "toy.zarr",
        "model": "tomoformer_tiny",
        "model_kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4},
        "batch_size": 4,
        "accelerator": "cpu",
        "seed": 11,
        "progress": False,
    }
    (tmp_path / "train.yaml").write_text(json.dumps(config))  # JSON is YAML
    common = ["train", "--config", "train.yaml", "--max-epochs", "3"]
    run_cli(*common, "--out", "straight", cwd=tmp_path)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    kill_when([*common, "--out", "killed"], tmp_path, last.exists)
    assert not (tmp_path / "killed" / "metrics.csv").exists()  # it died before finishing
    run_cli(*common, "--out", "killed", "--resume", cwd=tmp_path)
    epoch, loss = last_epoch_val_loss(tmp_path / "killed")
    straight_epoch, straight_loss = last_epoch_val_loss(tmp_path / "straight")
    assert epoch == straight_epoch == 2
    assert loss == pytest.approx(straight_loss, rel=1e-5)
    leftovers = [p.name for p in (tmp_path / "killed" / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_finetune_killed_then_resumed_equals_straight_run(tmp_path: Path) -> None:
    policy = "lora:4"  # the hard case: its checkpoints hold merged weights for loading, adapters for resuming
    write_dataset(tmp_path / "toy.zarr", toy_arrays(n=12), {"cell_size_m": 2.0})
    tiny = ["--model-opt", "embed_dim=32", "--model-opt", "depth=1", "--model-opt", "num_heads=2"]
    common = ["--data", "toy.zarr", "--batch-size", "4", "--accelerator", "cpu", "--seed", "3", "--no-progress"]
    run_cli("train", *common, "--model", "tomoformer_tiny", *tiny, "--max-epochs", "1", "--out", "pre", cwd=tmp_path)
    finetune = ["finetune", "--from", "pre/checkpoints/best.ckpt", "--policy", policy, *common, "--max-epochs", "3"]
    run_cli(*finetune, "--out", "straight", cwd=tmp_path)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    kill_when([*finetune, "--out", "killed"], tmp_path, last.exists)
    run_cli(*finetune, "--out", "killed", "--resume", cwd=tmp_path)
    epoch, loss = last_epoch_val_loss(tmp_path / "killed")
    straight_epoch, straight_loss = last_epoch_val_loss(tmp_path / "straight")
    assert epoch == straight_epoch == 2
    assert loss == pytest.approx(straight_loss, rel=1e-5)


@pytest.mark.parametrize("left", ["empty folder", "stamped group"])
def test_simulate_resume_after_a_kill_before_the_first_commit(tmp_path: Path, left: str) -> None:
    import zarr

    from tomoformer.io import OWNER_ATTR, owner_stamp

    partial = tmp_path / ".early.partial.zarr"
    partial.mkdir()  # killed between creating the folder and the group's first metadata write ...
    if left == "stamped group":  # ... or right after that write: our stamp, no arrays, no count
        zarr.open_group(str(partial), mode="w", zarr_format=3, attributes={OWNER_ATTR: owner_stamp(partial)})
    run_cli("simulate", "--out", "early.zarr", *SIM, "--resume", cwd=tmp_path)
    assert validate(tmp_path / "early.zarr") == [] and not partial.exists()


def test_simulate_leaves_an_unstamped_store_at_its_temporary_name_alone(tmp_path: Path) -> None:
    import zarr

    partial = tmp_path / ".early.partial.zarr"
    zarr.open_group(str(partial), mode="w", zarr_format=3)  # someone else's store at the name simulate uses
    simulate = [*CLI, "simulate", "--out", "early.zarr", *SIM, "--resume"]
    result = subprocess.run(simulate, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "did not write it" in result.stderr
    assert (partial / "zarr.json").is_file() and not (tmp_path / "early.zarr").exists()


def last_epoch_val_acc(run: Path) -> tuple[int, float, float]:
    with open(run / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_loss")]
    last = max(rows, key=lambda r: int(r["epoch"]))
    return int(last["epoch"]), float(last["val_loss"]), float(last["val_acc"])


def test_classify_killed_then_resumed_equals_straight_run(tmp_path: Path) -> None:
    policy = "lora:4"  # the hard case (adapters restored on resume); `full` takes the same path without them
    from tests.classify.conftest import write_npz

    write_npz(tmp_path / "strokes.npz", 64)
    tiny = ["--model-opt", "embed_dim=32", "--model-opt", "depth=1", "--model-opt", "num_heads=2"]
    common = ["--data", "strokes.npz", "--batch-size", "16", "--accelerator", "cpu", "--seed", "4", "--no-progress"]
    run_cli("classify", "pretrain", *common, *tiny, "--max-epochs", "1", "--out", "pre", cwd=tmp_path)
    finetune = ["classify", "finetune", "--from", "pre/checkpoints/best.ckpt", "--policy", policy, *common]
    finetune += ["--max-epochs", "3"]
    run_cli(*finetune, "--out", "straight", cwd=tmp_path)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    kill_when([*finetune, "--out", "killed"], tmp_path, last.exists)
    assert not (tmp_path / "killed" / "metrics.csv").exists()  # it died before finishing
    run_cli(*finetune, "--out", "killed", "--resume", cwd=tmp_path)
    epoch, loss, acc = last_epoch_val_acc(tmp_path / "killed")
    straight_epoch, straight_loss, straight_acc = last_epoch_val_acc(tmp_path / "straight")
    assert epoch == straight_epoch == 2
    assert loss == pytest.approx(straight_loss, rel=1e-5) and acc == straight_acc
