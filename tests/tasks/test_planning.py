"""The transmitter planner: information-based greedy selection on drawn building maps."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tomoformer.errors import DataError
from tomoformer.tasks.planning import PlanOptions, draw_building_maps, load_candidates, plan_sample

OPTIONS = PlanOptions(draws=12, n_angles=90, method="information")
COVERAGE = PlanOptions(n_angles=90, method="coverage")


def _hidden_block() -> tuple[np.ndarray, np.ndarray]:
    """A 32 x 32 area known to be open except an unknown block (p = 0.5) at rows/cols 12..19, measured only in
    the strip right of the block."""
    p = np.full((32, 32), 0.01)
    p[12:20, 12:20] = 0.5
    receivers = np.zeros((32, 32), dtype=bool)
    receivers[12:20, 24:32] = True
    return p, receivers


def test_a_candidate_that_looks_through_the_unknown_block_scores_higher() -> None:
    p, receivers = _hidden_block()
    # 0: left of the block, its rays cross it to the receivers; 1: above the receivers, its rays never cross it.
    candidates = np.array([[16, 4, 5.0], [4, 28, 5.0]], dtype=np.float32)
    plan = plan_sample(p, candidates, 2, receivers=receivers, options=OPTIONS)
    assert plan.chosen == [0, 1]
    assert plan.gains[0] > 2 * plan.gains[1]


def test_the_set_counts_a_repeat_less_than_a_new_view() -> None:
    p, _ = _hidden_block()
    # 0 and 1 see the block from the left (nearly the same place), 2 from below.
    candidates = np.array([[16, 4, 5.0], [16, 4.3, 5.0], [28, 16, 5.0]], dtype=np.float32)
    alone = plan_sample(p, candidates[:2], 1, options=OPTIONS).gains[0]
    plan = plan_sample(p, candidates, 3, options=OPTIONS)
    assert 2 in plan.chosen[:2]  # the other side of the block comes before a repeat of the left view
    assert sorted(plan.chosen) == [0, 1, 2]
    assert all(a >= b - 1e-9 for a, b in zip(plan.gains, plan.gains[1:], strict=False))  # diminishing returns
    assert plan.gains[2] < alone


@pytest.mark.parametrize("options", [OPTIONS, COVERAGE], ids=["information", "coverage"])
def test_a_certain_map_leaves_nothing_to_learn(options: PlanOptions) -> None:
    p = np.zeros((16, 16))
    p[4:8, 4:8] = 1.0
    plan = plan_sample(p, np.array([[1, 1, 5.0], [14, 14, 5.0]]), 2, options=options)
    assert max(plan.gains) < 1e-3


def test_coverage_lights_the_unknown_block_first() -> None:
    p, _ = _hidden_block()
    # 0: right beside the unknown block; 1: in the far corner of the known open area; 2: a repeat of 0.
    candidates = np.array([[16, 9, 5.0], [1, 30, 5.0], [16, 9.2, 5.0]], dtype=np.float32)
    plan = plan_sample(p, candidates, 3, reference_db=-75.0, options=COVERAGE)
    assert plan.chosen[0] in (0, 2)
    assert plan.gains[0] > 3 * plan.gains[-1]
    # the repeat adds less after its twin than it would alone
    alone = plan_sample(p, candidates[2:], 1, reference_db=-75.0, options=COVERAGE).gains[0]
    assert plan.gains[plan.chosen.index(2 if plan.chosen[0] == 0 else 0)] < 0.5 * alone


def test_drawn_maps_keep_the_probabilities() -> None:
    p = np.linspace(0, 1, 16 * 16).reshape(16, 16)
    maps = draw_building_maps(p, 400, 2.0, seed=0)
    assert maps.shape == (400, 16, 16)
    assert abs(maps.mean() - p.mean()) < 0.03
    assert not maps[:, 0, 0].any() and maps[:, -1, -1].all()


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((5, 2)), "shape [5, 2]"),
        (np.zeros((3, 5, 3)), "shape [3, 5, 3]"),
        (np.full((5, 3), np.nan), "NaN"),
    ],
)
def test_bad_candidates_are_one_line(tmp_path: Path, array: np.ndarray, message: str) -> None:
    path = tmp_path / "C.npy"
    np.save(path, array)
    with pytest.raises(DataError, match=re.escape(message)) as err:
        load_candidates(path, n_samples=2, k=2)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_candidates_shared_or_per_sample(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.ones((5, 3)))
    assert load_candidates(tmp_path / "a.npy", 4, 5).shape == (4, 5, 3)
    with pytest.raises(DataError, match="--k 6"):
        load_candidates(tmp_path / "a.npy", 4, 6)
