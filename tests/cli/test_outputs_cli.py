"""The output policy from the command line: a user's files survive every writing command, an input is never an
output, --resume continues the same run or refuses, one writer at a time, and failures leave no debris."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import toy_arrays
from tomoformer.checkpoint import save_checkpoint
from tomoformer.cli import main
from tomoformer.data.format import write_dataset
from tomoformer.models.registry import create_model

UNET = {"base_channels": 4, "depth": 1}
TRAIN = ["--model", "unet", "--model-opt", "base_channels=4", "--model-opt", "depth=1", "--batch-size", "4"]
TRAIN += ["--max-epochs", "1", "--accelerator", "cpu", "--no-progress", "--val-fraction", "0.25"]
SIM = ["--n", "4", "--frames", "4", "--size", "16", "--no-progress"]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a toy dataset and a (randomly initialised) tiny unet checkpoint; the working directory."""
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "toy.zarr", toy_arrays(n=8), {"cell_size_m": 2.0})
    hparams = {"model": "unet", "model_kwargs": UNET, "data_attrs": {"cell_size_m": 2.0}}
    save_checkpoint(tmp_path / "model.ckpt", create_model("unet", **UNET), hparams)
    return tmp_path


def user_folder(path: Path) -> Path:
    (path / "deep").mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    (path / "deep" / "raw.bin").write_bytes(b"\x01\x02")
    return path


def intact(path: Path) -> bool:
    return (path / "thesis.tex").read_text() == "years of work" and (
        path / "deep" / "raw.bin"
    ).read_bytes() == b"\x01\x02"


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tomoformer: error:"), err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "--checkpoint", "model.ckpt", "--data", "toy.zarr", "--out", "{out}"],
        ["predict", "--checkpoint", "model.ckpt", "--data", "toy.zarr", "--out", "p.npz", "--png", "{out}"],
        ["export", "--checkpoint", "model.ckpt", "--format", "safetensors", "--out", "{out}"],
        ["data", "show", "toy.zarr", "--out", "{out}"],
        ["data", "convert", "toy.zarr", "{out}"],
        ["evaluate", "--model", "threshold", "--data", "toy.zarr", "--out", "{out}"],
        ["simulate", *SIM, "--out", "{out}"],
        ["train", "--data", "toy.zarr", *TRAIN, "--out", "{out}"],
    ],
    ids=["predict", "predict-png", "export", "show", "convert", "evaluate", "simulate", "train"],
)
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_user_folder_survives_every_writing_command(
    work: Path, capsys: pytest.CaptureFixture[str], command: list[str], overwrite: bool
) -> None:
    suffix = {"predict": ".zarr", "export": ".safetensors", "show": ".png", "convert": ".zarr", "simulate": ".zarr"}
    name = "mine" + suffix.get(command[0] if command[0] != "data" else command[1], "")
    folder = user_folder(work / name)
    args = [a.replace("{out}", name) for a in command] + (["--overwrite"] if overwrite else [])
    assert main(args) == 2
    one_line_error(capsys, name)
    assert intact(folder)
    assert listing(work) == sorted(["toy.zarr", "model.ckpt", name])  # no lock, no temporaries, no p.npz


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "--checkpoint", "model.ckpt", "--data", "toy.zarr", "--out", "toy.zarr", "--overwrite"],
        ["predict", "--checkpoint", "model.ckpt", "--data", "toy.zarr", "--out", "./toy.zarr/p.npz"],
        ["data", "convert", "toy.zarr", "toy.zarr", "--overwrite"],
        ["data", "merge", "toy.zarr", "other.zarr", "--out", "other.zarr", "--overwrite"],
        ["export", "--checkpoint", "model.ckpt", "--format", "safetensors", "--out", "model.ckpt", "--overwrite"],
        ["train", "--data", "toy.zarr", *TRAIN, "--out", "toy.zarr", "--overwrite"],
        ["evaluate", "--checkpoint", "model.ckpt", "--data", "toy.zarr", "--out", ".", "--overwrite"],
    ],
    ids=["predict", "predict-inside", "convert", "merge", "export", "train", "evaluate-around"],
)
def test_an_output_that_is_an_input_is_refused(
    work: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    write_dataset(work / "other.zarr", toy_arrays(n=4, seed=1), {})
    before = {p: p.stat().st_mtime_ns for p in work.rglob("*")}
    assert main(command) == 2
    one_line_error(capsys, "overlaps the input")
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*")} == before


def test_an_input_reached_through_a_symlink_is_refused(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "alias.zarr").symlink_to(work / "toy.zarr", target_is_directory=True)
    args = ["predict", "--checkpoint", "model.ckpt", "--data", "toy.zarr", "--out", "alias.zarr", "--overwrite"]
    assert main(args) == 2
    one_line_error(capsys, "overlaps the input")


def test_existing_outputs_need_overwrite(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    predict = ["predict", "--checkpoint", "model.ckpt", "--data", "toy.zarr", "--out", "pred.zarr"]
    assert main(predict) == 0
    stamp = (work / "pred.zarr" / "zarr.json").stat().st_mtime_ns
    assert main(predict) == 2
    one_line_error(capsys, "pred.zarr", "--overwrite")
    assert (work / "pred.zarr" / "zarr.json").stat().st_mtime_ns == stamp
    assert main([*predict, "--overwrite"]) == 0  # our own store may be replaced
    assert listing(work) == ["model.ckpt", "pred.zarr", "toy.zarr"]


def test_train_keeps_user_folders_inside_a_run_folder(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = ["train", "--data", "toy.zarr", *TRAIN, "--out", "run"]
    assert main(train) == 0
    run = work / "run"
    user_folder(run / "logs_mine")
    (run / "my_notes.md").write_text("notes")
    assert main(train) == 2  # an existing run needs --resume or --overwrite
    one_line_error(capsys, "--resume", "--overwrite")
    assert main([*train, "--resume", "--max-epochs", "2"]) == 0
    assert (run / "logs-1" / "metrics.csv").is_file()
    assert main([*train, "--overwrite"]) == 0
    assert intact(run / "logs_mine") and (run / "my_notes.md").read_text() == "notes"
    assert not (run / "logs-1").exists()  # ours, replaced with the rest of the old run
    assert yaml.safe_load((run / "config.yaml").read_text())["max_epochs"] == 1


def test_resume_refuses_other_options_and_leaves_the_run_alone(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = ["train", "--data", "toy.zarr", *TRAIN, "--out", "run"]
    assert main(train) == 0
    run = work / "run"
    config = (run / "config.yaml").read_text()
    logs = listing(run / "logs")
    assert main([*train, "--resume", "--lr", "0.1", "--seed", "7"]) == 2
    one_line_error(capsys, "cannot resume", "lr, seed")
    assert main([*train, "--resume", "--no-d4"]) == 2
    one_line_error(capsys, "augment.d4")
    assert (run / "config.yaml").read_text() == config and listing(run / "logs") == logs
    assert not (run / "logs-1").exists()


def test_resume_of_a_finished_run_says_so_and_trains_nothing(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = ["train", "--data", "toy.zarr", *TRAIN, "--out", "run"]
    assert main(train) == 0
    last = work / "run" / "checkpoints" / "last.ckpt"
    stamp = last.stat().st_mtime_ns
    capsys.readouterr()
    assert main([*train, "--resume"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert last.stat().st_mtime_ns == stamp and not (work / "run" / "logs-1").exists()


def test_experts_fit_resume_with_another_k_is_refused(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fit = ["experts", "fit", "--data", "toy.zarr", "--out", "ex", "--k", "2", "--epochs", "1", "--batch-size", "4"]
    fit += ["--val-fraction", "0.25", "--accelerator", "cpu", "--no-progress", "--expert-model", "unet,base_channels=4"]
    assert main(fit) == 0
    model = (work / "ex" / "model.ckpt").read_bytes()
    assert main([*fit, "--resume", "--k", "3"]) == 2
    one_line_error(capsys, "cannot resume", "k")
    assert (work / "ex" / "model.ckpt").read_bytes() == model
    assert main([*fit, "--resume"]) == 0
    assert "already finished" in capsys.readouterr().out


def test_a_held_lock_refuses_with_its_holder(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "command": "simulate", "started": "08:00:00"}
    (work / "d.zarr.lock").write_text(json.dumps(holder))
    assert main(["simulate", *SIM, "--out", "d.zarr"]) == 2
    one_line_error(capsys, "in use", "tomoformer simulate", f"pid {os.getppid()}", "d.zarr.lock")
    assert not (work / "d.zarr").exists() and (work / "d.zarr.lock").exists()


def test_two_simulate_runs_on_one_output_do_not_both_succeed(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    big = ["simulate", "--n", "400", "--frames", "4", "--size", "16", "--chunk", "1", "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tomoformer.cli", *big, "--out", "d.zarr"], cwd=work, env=env, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while not (work / "d.zarr.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert main(["simulate", *SIM, "--out", "d.zarr"]) == 2
        one_line_error(capsys, "in use", f"pid {proc.pid}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # The killed writer's lock is stale now: the next run takes it over.
    assert main(["simulate", *SIM, "--out", "d.zarr"]) == 0
    assert not (work / "d.zarr.lock").exists()


def test_failing_commands_leave_no_debris(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arrays = toy_arrays(n=8)
    del arrays["buildings"]
    write_dataset(work / "unlabelled.zarr", arrays, {})
    (work / "broken.ckpt").write_bytes(b"not a checkpoint")
    before = listing(work)
    failing = [
        ["train", "--data", "unlabelled.zarr", *TRAIN, "--out", "runs/new"],
        ["predict", "--checkpoint", "broken.ckpt", "--data", "toy.zarr", "--out", "p.zarr", "--png", "pngs"],
        ["evaluate", "--checkpoint", "broken.ckpt", "--data", "toy.zarr", "--out", "eval"],
        ["export", "--checkpoint", "broken.ckpt", "--format", "onnx", "--out", "m.onnx"],
    ]
    for args in failing:
        assert main(args) == 2, args
        capsys.readouterr()
    # `runs/` was made as the lock's parent; nothing is left in it.
    assert listing(work) in (before, sorted([*before, "runs"]))
    assert not (work / "runs").exists() or listing(work / "runs") == []


def test_a_failed_resume_never_rewrites_the_config(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = ["train", "--data", "toy.zarr", *TRAIN, "--out", "run"]
    assert main(train) == 0
    write_dataset(work / "other.zarr", toy_arrays(n=8, seed=5), {})
    config = (work / "run" / "config.yaml").read_text()
    assert main(["train", "--data", "other.zarr", *TRAIN, "--out", "run", "--resume"]) == 2
    one_line_error(capsys, "cannot resume", "data")
    assert (work / "run" / "config.yaml").read_text() == config
