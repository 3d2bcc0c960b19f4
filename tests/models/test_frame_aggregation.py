"""The per-pixel aggregation over frames (``frame_stats="stable"``) does not depend on how many copies of the frames
it sees, nor on their order; the original ``"max"`` stays selectable and is what weights saved without the option
load with; the log-uniform frame-count sampler covers its range, per batch and by seed."""

from __future__ import annotations

import math

import pytest
import torch

from tomoformer.data.transforms import draw_frame_count, log_uniform_count
from tomoformer.errors import ConfigError
from tomoformer.models.features import STABLE_PIXEL_STATISTICS, SoftExtreme, pixel_statistics
from tomoformer.models.pixel_pool import PixelFramePool
from tomoformer.models.registry import create_model


def _inputs(T: int = 4, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    signals = -60 - 25 * torch.rand(2, T, size, size, generator=g)
    signals[torch.rand(signals.shape, generator=g) < 0.2] = float("nan")  # sparse cells
    signals[1, -1] = float("nan")  # one missing frame
    tx = torch.cat([size * torch.rand(2, T, 2, generator=g), 3 * torch.rand(2, T, 1, generator=g)], dim=-1)
    return signals, tx


def _twice(signals: torch.Tensor, tx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([signals, signals], dim=1), torch.cat([tx, tx], dim=1)


def test_soft_extreme_lies_between_mean_and_max_and_ignores_duplicates() -> None:
    x = torch.tensor([[0.0, 1.0, -2.0, 0.5]])
    valid = torch.tensor([[True, True, True, False]])
    values = []
    for copies in (1, 2, 5):
        acc = SoftExtreme(torch.zeros(1), tau=0.25)
        for _ in range(copies):
            acc.add(x, valid)
        values.append(float(acc.value()))
    assert values[0] == pytest.approx(values[1], abs=1e-6) == pytest.approx(values[2], abs=1e-6)
    assert -1 / 3 < values[0] < 1.0  # above the mean of the valid values, below their maximum
    expected = 0.25 * math.log((math.exp(0) + math.exp(4) + math.exp(-8)) / 3)
    assert values[0] == pytest.approx(expected, abs=1e-6)
    nothing = SoftExtreme(torch.zeros(1), tau=0.25)
    nothing.add(x, torch.zeros_like(valid))
    assert float(nothing.value()) == 0.0


def test_stable_statistics_are_invariant_to_duplicated_and_permuted_frames() -> None:
    signals, tx = _inputs(T=6)
    base = pixel_statistics(signals, tx, aggregation="stable")
    # Chunks smaller than T exercise the running accumulation.
    doubled = pixel_statistics(*_twice(signals, tx), aggregation="stable", chunk=5)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    permuted = pixel_statistics(signals[:, order], tx[:, order], aggregation="stable", chunk=4)
    torch.testing.assert_close(doubled, base, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(permuted, base, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(base).all() and base.shape[1] == len(STABLE_PIXEL_STATISTICS)
    # The original design (maxima and minima) stays available and differs.
    legacy = pixel_statistics(signals, tx, aggregation="max")
    assert not torch.allclose(legacy, base)


@pytest.mark.parametrize("name", ["unet", "tomoformer_tiny", "tomoformer_pyramid"])
def test_models_are_invariant_to_duplicated_and_permuted_frames(name: str) -> None:
    torch.manual_seed(0)
    kwargs = {"physics_features": True} if name == "unet" else {"img_size": 16}
    model = create_model(name, **kwargs).eval()
    signals, tx = _inputs(T=4)
    with torch.no_grad():
        base = model(signals, tx)
        doubled = model(*_twice(signals, tx))
        permuted = model(signals[:, [2, 0, 3, 1]], tx[:, [2, 0, 3, 1]])
    torch.testing.assert_close(doubled, base, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(permuted, base, atol=1e-4, rtol=1e-4)


def test_max_aggregation_is_selectable_and_old_weights_load_with_it() -> None:
    torch.manual_seed(0)
    old = create_model("tomoformer_tiny", img_size=16, frame_stats="max")
    state = {k: v for k, v in old.state_dict().items() if not k.endswith("frame_stats_code")}  # as saved before
    new = create_model("tomoformer_tiny", img_size=16)
    assert new.cfg.frame_stats == "stable"
    new.load_state_dict(state, strict=True)
    assert new.cfg.frame_stats == new.pixel_stats.frame_stats == new.pixel_pool.frame_stats == "max"
    signals, tx = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(new.eval()(signals, tx), old.eval()(signals, tx))
    # Weights saved with the option carry it.
    again = create_model("tomoformer_tiny", img_size=16, frame_stats="max")
    again.load_state_dict(create_model("tomoformer_tiny", img_size=16).state_dict())
    assert again.cfg.frame_stats == "stable"
    with pytest.raises(ConfigError, match="frame_stats must be one of"):
        create_model("unet", frame_stats="mean")


def test_pixel_pool_soft_maximum_ignores_duplicates() -> None:
    torch.manual_seed(0)
    pool = PixelFramePool(in_dim=3, dim=4, chunk=3, frame_stats="stable")
    feats = torch.randn(1, 5, 3, 6, 6)
    valid = torch.rand(1, 5, 6, 6) > 0.3
    with torch.no_grad():
        base = pool(feats, valid)
        doubled = pool(torch.cat([feats, feats], 1), torch.cat([valid, valid], 1))
    torch.testing.assert_close(doubled, base, atol=1e-5, rtol=1e-5)


def test_log_uniform_frame_counts_cover_the_range_evenly_in_log() -> None:
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([draw_frame_count(1, 128, "log-uniform", g) for _ in range(4000)])
    assert counts.min() == 1 and counts.max() >= 100 and counts.max() <= 128
    # Each doubling of T gets about a seventh of the draws (log2(129) ~ 7 octaves); uniform would give 1-2 %.
    low, high = float(((counts >= 1) & (counts < 2)).float().mean()), float((counts >= 64).float().mean())
    assert 0.11 < low < 0.18 and 0.11 < high < 0.18
    again = torch.Generator().manual_seed(0)
    assert [draw_frame_count(1, 128, "log-uniform", again) for _ in range(50)] == counts[:50].tolist()
    assert log_uniform_count(3, 3, 0.99) == 3 and log_uniform_count(1, 8, 0.0) == 1
    assert log_uniform_count(1, 8, 0.999) == 8
    with pytest.raises(ValueError, match="frame sampling"):
        draw_frame_count(1, 4, "gaussian", g)
