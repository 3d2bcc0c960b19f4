"""benchmarks/accuracy.py's learning-rate sweep: the grid, then beyond whichever edge wins, at most N times."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy.py"
spec = importlib.util.spec_from_file_location("bench_accuracy", SCRIPT)
assert spec is not None and spec.loader is not None
accuracy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(accuracy)

GRID = [3e-4, 1e-3, 3e-3]


@pytest.mark.parametrize(
    ("peak", "expected"),
    [
        (1e-3, GRID),  # the grid's middle wins: nothing more is tried
        (2e-2, [*GRID, 9e-3, 2.7e-2]),  # the top edge keeps winning: two rates beyond it, no third
        (4e-3, [*GRID, 9e-3]),  # 9e-3 is tried, loses to 3e-3: the edge is settled after one extension
        (1e-5, [9e-5, 2.7e-5, *GRID]),  # the bottom edge: the grid's ratio continued downwards
    ],
)
def test_sweep_extends_past_a_winning_edge_only(peak: float, expected: list[float]) -> None:
    calls: list[float] = []

    def val_iou(lr: float) -> float:
        calls.append(lr)
        return -abs(lr - peak) / peak  # a single peak at ``peak``

    tried = accuracy.sweep_lr(val_iou, GRID, extensions=2)
    assert sorted(tried) == pytest.approx(sorted(expected))
    assert len(calls) == len(set(calls)) == len(expected)  # every rate trains once
