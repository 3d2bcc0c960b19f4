"""``tomoformer bench``: the table, the output file, the data-path columns, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tomoformer.cli import main

SMALL = ["--frames", "4", "--size", "16", "--batch-size", "2", "--steps", "1", "--warmup", "1", "--device", "cpu"]


def test_bench_with_data_path_writes_json(toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--models", "unet", *SMALL, "--no-inference", "--data", str(toy_dataset), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "train x unet" in printed and "stall" in printed
    rows = json.loads(out.read_text())["results"]
    assert [r["model"] for r in rows] == ["unet"] and rows[0]["frames"] == 4 and rows[0]["size"] == 16
    assert rows[0]["data_samples_per_s"] > 0 and 0.0 <= rows[0]["host_wait_fraction"] <= 1.0
    assert rows[0]["infer_samples_per_s"] is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--models", "nope"], "unknown model"),
        (["--data-on-device"], "--data-on-device needs --data"),
        (["--precision", "fp8"], "precision"),
        (["--out", "x.txt"], "csv or .json"),
    ],
)
def test_bench_user_errors_are_one_line(extra: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    args = ["bench", *SMALL, "--models", "unet", "--no-train", "--no-inference", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
