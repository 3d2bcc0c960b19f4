"""`tomoformer demo` end to end at a tiny size: every model trained, compared and saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tomoformer.checkpoint import load_checkpoint
from tomoformer.cli import main
from tomoformer.tasks.demo import DEMO_FITTED, DEMO_MODELS


def test_demo_writes_report_summary_and_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--out",
        str(out),
        "--n-train",
        "24",
        "--n-test",
        "6",
        "--size",
        "16",
        "--frames",
        "3",
        "--epochs",
        "0.01",
        "--no-progress",
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == set(DEMO_MODELS) | set(DEMO_FITTED)
    for name, metrics in summary.items():
        assert 0.0 <= metrics["iou"] <= 1.0 and metrics["train_seconds"] >= 0
        assert load_checkpoint(out / "checkpoints" / f"{name}.ckpt").name == name
    html = (out / "report.html").read_text()
    assert all(name in html for name in summary)
    table = capsys.readouterr().out
    assert "tomoformer_tiny" in table and "iou" in table


def test_demo_rejects_unknown_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), "--models", "tomoformer_tiny,magic"]) == 2
    assert "magic" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
