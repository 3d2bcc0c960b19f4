"""`tomoformer finetune-study`: every (size, policy) run plus scratch, results CSV, figure and summary."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tests.conftest import toy_arrays
from tomoformer.cli import main
from tomoformer.data.format import write_dataset
from tomoformer.io import write_marker
from tomoformer.tasks.study import StudyRow, run_study, write_results
from tomoformer.tasks.train import TrainConfig

TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4}
COMMON = ["--max-epochs", "1", "--batch-size", "4", "--accelerator", "cpu"]


@pytest.fixture
def pretrained(toy_dataset: Path, tmp_path: Path) -> Path:
    out = tmp_path / "pre"
    args = ["train", "--data", str(toy_dataset), "--out", str(out), "--model", "tomoformer_tiny", *COMMON]
    args += [arg for key, value in TINY.items() for arg in ("--model-opt", f"{key}={value}")]
    assert main([*args, "--no-progress"]) == 0
    return out / "checkpoints" / "best.ckpt"


def test_study_writes_all_rows_figure_and_summary(pretrained: Path, toy_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    args = ["finetune-study", "--from", str(pretrained), "--data", str(toy_dataset), "--out", str(out)]
    args += ["--test-data", str(toy_dataset)]
    assert main([*args, "--sizes", "4,8", "--policies", "head,lora:2", *COMMON]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["size"]), r["policy"]) for r in rows] == [(0, "none")] + [
        (size, policy) for size in (4, 8) for policy in ("head", "lora:2", "scratch")
    ]
    for r in rows:
        assert 0.0 <= float(r["val_iou"]) <= 1.0 and 0.0 <= float(r["test_iou"]) <= 1.0 and float(r["seconds"]) > 0
        trainable, total = int(r["trainable_params"]), int(r["total_params"])
        expected = {"scratch": trainable == total, "none": trainable == 0}.get(r["policy"], 0 < trainable < total)
        assert expected, r
    assert rows[1]["test_iou"] != rows[3]["test_iou"]  # each run's own checkpoint is scored, not one model
    for figure in ("iou_vs_size.png", "test_iou_vs_size.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.md").read_text()
    assert "| policy |" in summary and "n=4" in summary and "n=8" in summary
    assert "Test IoU" in summary and "No fine-tuning" in summary
    assert all(f"| {p} |" in summary for p in ("head", "lora:2", "scratch"))
    assert not list(out.glob(".subsets-*"))  # the temporary subset files are gone
    # Nested subsets of the 14 training samples left after holding out 2 (val_fraction 0.1 of 16).
    assert (out / "runs" / "n8-lora-2" / "checkpoints" / "best.ckpt").exists()


def test_study_resume_skips_done_runs_and_rejects_bad_input(
    pretrained: Path, toy_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "study"
    write_marker(out, {"kind": "folder"})  # a study folder of ours (tomoformer.outputs)
    done = [StudyRow(0, "none", 0.25, 0, 100, 0.5), StudyRow(4, "head", 0.5, 10, 100, 1.0)]
    write_results(done, out / "results.csv")
    config = TrainConfig(max_epochs=1, batch_size=4, accelerator="cpu", progress=False)
    rows = run_study(pretrained, toy_dataset, out, [4], ["head"], config=config, scratch=False, resume=True)
    assert [(r.size, r.policy, r.val_iou) for r in rows] == [(0, "none", 0.25), (4, "head", 0.5)]
    assert not (out / "runs").exists()
    assert (out / "summary.md").exists() and (out / "iou_vs_size.png").exists()
    common = ["finetune-study", "--from", str(pretrained), "--data", str(toy_dataset), "--out", str(out), "--resume"]
    for sizes, policy in (("100", "head"), ("4", "freeze:9")):  # a size beyond the data; K beyond the depth
        assert main([*common, "--sizes", sizes, "--policies", policy]) == 2


def test_study_resume_refuses_other_settings_and_accepts_new_rows(
    pretrained: Path, toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "study"
    args = ["finetune-study", "--from", str(pretrained), "--data", str(toy_dataset), "--out", str(out)]
    assert main([*args, "--sizes", "4", "--policies", "head", "--no-scratch", *COMMON]) == 0
    assert "seed: 0" in (out / "config.yaml").read_text()
    capsys.readouterr()
    # Another seed or learning rate would put runs of two different studies into one table.
    for other in (["--seed", "1"], ["--lr", "0.01"]):
        assert main([*args, "--resume", "--sizes", "4", "--policies", "head", "--no-scratch", *COMMON, *other]) == 2
    err = capsys.readouterr().err
    assert "train.seed" in err and "train.lr" in err and err.count("\n") == 2
    # The same settings may add a policy (its own rows); the earlier run is kept.
    before = (out / "runs" / "n4-head" / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    assert main([*args, "--resume", "--sizes", "4", "--policies", "head,lora:2", "--no-scratch", *COMMON]) == 0
    with open(out / "results.csv", newline="") as f:
        assert [r["policy"] for r in csv.DictReader(f)] == ["none", "head", "lora:2"]
    assert (out / "runs" / "n4-head" / "checkpoints" / "best.ckpt").stat().st_mtime_ns == before


def test_study_resumes_by_the_data_not_by_its_spelling(
    pretrained: Path, toy_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "study"
    study = ["finetune-study", "--from", str(pretrained), "--sizes", "4", "--policies", "head", "--no-scratch"]
    assert main([*study, "--data", str(toy_dataset), "--out", str(out), *COMMON]) == 0
    done = (out / "runs" / "n4-head" / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    # The same store, given relative to another working directory, resumes: nothing is run again.
    monkeypatch.chdir(toy_dataset.parent.parent)
    relative = str(toy_dataset.relative_to(toy_dataset.parent.parent))
    assert main([*study, "--data", relative, "--out", str(out), "--resume", *COMMON]) == 0
    assert (out / "runs" / "n4-head" / "checkpoints" / "best.ckpt").stat().st_mtime_ns == done
    # Other data at the same path (the store made again with another seed) is refused: paths alone would mix them.
    shutil.rmtree(toy_dataset)
    write_dataset(toy_dataset, toy_arrays(seed=1), {"cell_size_m": 2.0, "group_names": ["a", "b"]})
    capsys.readouterr()
    assert main([*study, "--data", str(toy_dataset), "--out", str(out), "--resume", *COMMON]) == 2
    err = capsys.readouterr().err
    assert "data.sha256" in err and err.count("\n") == 1
