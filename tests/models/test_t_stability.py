"""Maps get no worse as frames are added: trained with the frame count of each batch drawn log-uniformly in 1-64,
``tomoformer_tiny`` and ``unet`` (default ``frame_stats="stable"``) reach at least the same held-out IoU at T = 32
as at T = 8, with no slack.

The task is the fast simulator at 16x16 cells (mixed city styles, 2 m cells): 32 training tiles with 64 maps each,
16 held-out tiles from another simulator seed (so never a training tile) with 32 maps each; T maps of a held-out
tile are its first T (random transmitters). The training loop is ``benchmarks/t_curve.py``'s (AdamW, BCE, a D4
symmetry and one frame count per batch of 8). Seeded, CPU, one thread; about 20-50 s per model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "t_curve.py"
spec = importlib.util.spec_from_file_location("bench_t_curve", SCRIPT)
assert spec is not None and spec.loader is not None
t_curve = importlib.util.module_from_spec(spec)
spec.loader.exec_module(t_curve)

SIZE = 16


@pytest.fixture(scope="module")
def tiles() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return t_curve.simulate(SIZE, 64, 32, seed=0), t_curve.simulate(SIZE, 32, 16, seed=10_000)


@pytest.mark.parametrize(("name", "kwargs", "steps"), [("unet", {}, 120), ("tomoformer_tiny", {"img_size": SIZE}, 100)])
def test_iou_at_32_frames_is_at_least_iou_at_8(
    name: str, kwargs: dict, steps: int, tiles: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]
) -> None:
    train, test = tiles
    model = t_curve.train(name, train, steps, seed=0, frames=(1, 64), sampling="log-uniform", **kwargs)
    assert model.pixel_stats.frame_stats == "stable"
    ious = t_curve.curve(model, test, (1, 8, 32))
    assert ious[32] >= ious[8] > ious[1], ious
