"""The printed table and the CSV / JSON files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tomoformer.errors import ConfigError
from tomoformer.perf.report import environment, format_table, write_results
from tomoformer.perf.throughput import BenchResult


def results() -> list[BenchResult]:
    base = BenchResult("unet", 64, 48, 2, "cpu", "32", False, 1000, 10.0, 20.0, train_vs_unet=1.0)
    other = BenchResult("seednet", 64, 48, 2, "cpu", "32", False, 2000, 5.0, None, train_vs_unet=0.5)
    other.extra["stall_fraction"] = 0.25
    failed = BenchResult("tomoformer_base", 64, 48, 2, "cpu", "32", False, 3000, error="out of memory")
    return [base, other, failed]


def test_table_shows_measured_columns_ratios_and_errors() -> None:
    table = format_table(results())
    header = table.splitlines()[0]
    assert "train x unet" in header and "stall" in header and "blocks TF/s" not in header
    assert "0.50" in table and "25.0%" in table and "out of memory" in table


def test_csv_and_json_hold_every_field(tmp_path: Path) -> None:
    meta = environment(torch.device("cpu"))
    with open(write_results(tmp_path / "b.csv", results(), meta), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["unet", "seednet", "tomoformer_base"] and rows[1]["stall_fraction"] == "0.25"
    data = json.loads(write_results(tmp_path / "sub" / "b.json", results(), meta).read_text())
    assert data["environment"]["device"] == "cpu" and data["results"][0]["train_samples_per_s"] == 10.0
    with pytest.raises(ConfigError, match=r"csv or \.json"):
        write_results(tmp_path / "b.txt", results(), meta)
