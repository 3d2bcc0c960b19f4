"""The same command with the same seed gives identical metrics on the CPU, in fresh processes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.cli.test_crash_resume import run_cli
from tests.conftest import toy_arrays
from tomoformer.data.format import write_dataset


def _metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_and_evaluate_repeat_exactly(tmp_path: Path) -> None:
    write_dataset(tmp_path / "toy.zarr", toy_arrays(n=10), {"cell_size_m": 2.0})
    train = ["train", "--data", "toy.zarr", "--model", "tomoformer_tiny", "--max-epochs", "2", "--batch-size", "4"]
    train += ["--model-opt", "embed_dim=32", "--model-opt", "depth=1", "--model-opt", "num_heads=2"]
    train += ["--accelerator", "cpu", "--no-progress", "--sample-frames", "3"]
    results = []
    for run in ("a", "b"):
        run_cli(*train, "--seed", "7", "--out", run, cwd=tmp_path)
        run_cli(
            "evaluate",
            "--checkpoint",
            f"{run}/checkpoints/best.ckpt",
            "--data",
            "toy.zarr",
            "--out",
            f"{run}/eval",
            cwd=tmp_path,
        )
        results.append(
            (
                _metrics(tmp_path / run / "metrics.csv"),
                json.loads((tmp_path / run / "eval" / "metrics.json").read_text()),
            )
        )
    (metrics_a, eval_a), (metrics_b, eval_b) = results
    assert len(metrics_a) >= 2 and any(row.get("val_loss") for row in metrics_a)
    assert metrics_a == metrics_b
    assert eval_a == eval_b

    run_cli(*train, "--seed", "8", "--out", "c", cwd=tmp_path)
    assert _metrics(tmp_path / "c" / "metrics.csv") != metrics_a  # the seed matters
