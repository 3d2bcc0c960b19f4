"""`tomoformer demo` end to end at a tiny size: every model trained, compared and saved."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tomoformer.checkpoint import load_checkpoint
from tomoformer.cli import demo_cmd, main
from tomoformer.tasks.demo import DEMO_FITTED, DEMO_MODELS, FULL_DEMO, DemoOptions


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
    assert set(summary) == set(DemoOptions().models)
    for name, metrics in summary.items():
        assert 0.0 <= metrics["iou"] <= 1.0 and metrics["train_seconds"] >= 0
        assert load_checkpoint(out / "checkpoints" / f"{name}.ckpt").name == name
    html = (out / "report.html").read_text()
    assert all(name in html for name in summary)
    table = capsys.readouterr().out
    assert "tomoformer_tiny" in table and "iou" in table
    # the Markdown table is written from the same run: one row per model, best IoU first
    rows = [line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| `")]
    ious = [float(row.split("|")[2]) for row in rows]
    assert len(rows) == len(summary) and ious == sorted(ious, reverse=True)
    assert ious[0] == pytest.approx(max(m["iou"] for m in summary.values()), abs=5e-4)


def test_demo_default_is_quick_and_full_is_the_longer_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[DemoOptions] = []
    monkeypatch.setattr(demo_cmd, "run_demo", seen.append)
    assert main(["demo", "--out", str(tmp_path / "a")]) == 0
    assert main(["demo", "--out", str(tmp_path / "b"), "--full"]) == 0
    assert main(["demo", "--out", str(tmp_path / "c"), "--full", "--frames", "4", "--models", "unet,rti"]) == 0
    quick, full, mixed = seen
    assert set(full.models) == set(DEMO_MODELS) | set(DEMO_FITTED) and full.frames == 16 and full.base_epochs == 20
    assert full == dataclasses.replace(FULL_DEMO, out=str(tmp_path / "b"))
    # the quick default trains less: fewer learned models, fewer maps and epochs
    assert set(quick.models) < set(full.models) and quick.frames < full.frames and quick.base_epochs < full.base_epochs
    assert quick.n_train * quick.base_epochs < full.n_train * full.base_epochs
    # explicit flags override either preset
    assert mixed.frames == 4 and mixed.models == ("unet", "rti") and mixed.n_train == full.n_train


def test_demo_rejects_unknown_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), "--models", "tomoformer_tiny,magic"]) == 2
    assert "magic" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
