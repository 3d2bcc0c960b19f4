import math

import pytest
import torch

from tomoformer.models.features import (
    NUM_FRAME_FEATURES,
    NUM_PIXEL_STATISTICS,
    PIXEL_STATISTICS,
    frame_features,
    pad_to_multiple,
    pixel_statistics,
    radial_slope,
)


def _signals(B: int = 2, T: int = 4, H: int = 16, W: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    tx = torch.rand(B, T, 3, generator=gen) * torch.tensor([H, W, 3.0])
    rows = torch.arange(H).view(1, 1, H, 1)
    cols = torch.arange(W).view(1, 1, 1, W)
    d = (rows - tx[..., 0, None, None]) ** 2 + (cols - tx[..., 1, None, None]) ** 2 + tx[..., 2, None, None] ** 2
    signals = -10 * torch.log10(d.clamp_min(1)) - 50 + torch.randn(B, T, H, W, generator=gen)
    return signals, tx


def test_frame_feature_shapes_and_presence() -> None:
    signals, tx = _signals()
    signals[0, 1] = float("nan")
    feats, present = frame_features(signals, tx)
    assert feats.shape == (2, 4, NUM_FRAME_FEATURES, 16, 16)
    assert torch.isfinite(feats).all()
    assert present.tolist() == [[True, False, True, True], [True] * 4]
    assert (feats[0, 1, [0, 1, 3]] == 0).all()  # missing frame: no signal, no validity, no excess


def test_features_ignore_absolute_offset() -> None:
    signals, tx = _signals()
    a, _ = frame_features(signals, tx)
    b, _ = frame_features(signals + torch.tensor([30.0, -7.0]).view(2, 1, 1, 1), tx)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_excess_loss_removes_free_space() -> None:
    signals, tx = _signals()
    feats, _ = frame_features(signals, tx)
    # Signals are free space + 1 dB noise: the excess is the noise only (spread ~1 dB, a few dB below the
    # frame's line-of-sight level, its 99th percentile), the normalised dB is not.
    excess = feats[:, :, 3]
    assert excess.std() < 1.5 / 20
    assert -4 / 20 < excess.mean() < 0
    assert feats[:, :, 0].std() > 2 * excess.std()


def test_unknown_tx_gives_zeros_and_flag() -> None:
    signals, tx = _signals()
    tx[0, 2] = float("nan")
    feats, _ = frame_features(signals, tx)
    assert (feats[0, 2, 2:4] == 0).all() and (feats[0, 2, 4] == 1).all()
    assert (feats[0, 1, 4] == 0).all()
    feats_none, _ = frame_features(signals, None)
    assert (feats_none[:, :, 4] == 1).all() and (feats_none[:, :, 2:4] == 0).all()


def test_pixel_statistics_are_finite_and_chunk_invariant() -> None:
    signals, tx = _signals(T=7)
    signals[0, 3] = float("nan")  # missing frame
    signals[1, :, 2:4, 5:9] = float("nan")  # never-received pixels
    full = pixel_statistics(signals, tx, chunk=64)
    chunked = pixel_statistics(signals, tx, chunk=2)
    assert full.shape == (2, NUM_PIXEL_STATISTICS, 16, 16)
    assert torch.isfinite(full).all()
    torch.testing.assert_close(full, chunked, atol=1e-5, rtol=1e-5)
    frac = full[:, PIXEL_STATISTICS.index("valid_frac")]
    assert (frac[1, 2:4, 5:9] == 0).all()
    assert (frac[0] == 1).all()  # the missing frame does not count against any pixel


def test_pixel_statistics_all_nan() -> None:
    stats = pixel_statistics(torch.full((1, 3, 5, 6), float("nan")), torch.full((1, 3, 3), float("nan")))
    assert torch.isfinite(stats).all() and (stats == 0).all()


def test_pixel_statistics_values() -> None:
    signals = torch.tensor([0.0, 20.0, float("nan"), 40.0]).view(1, 4, 1, 1)
    stats = pixel_statistics(signals)
    db = [float(stats[0, PIXEL_STATISTICS.index(k), 0, 0]) for k in ("db_mean", "db_max", "db_min")]
    # One cell per frame: every frame's median is its own value, so every normalised value is 0.
    assert db == [0.0, 0.0, 0.0]
    assert math.isclose(float(stats[0, PIXEL_STATISTICS.index("valid_frac")]), 1.0)


@pytest.mark.parametrize("shape", [(16, 16), (17, 23)])
def test_pad_to_multiple(shape: tuple[int, int]) -> None:
    out = pad_to_multiple(torch.ones(1, 2, *shape), 5)
    assert out.shape[-2] % 5 == 0 and out.shape[-1] % 5 == 0
    assert out.sum() == 2 * shape[0] * shape[1]


def test_radial_slope_marks_the_wall_not_its_shadow() -> None:
    """A transmitter far to the west; every ray loses 10 dB when it crosses column 8: only column 8 lights up."""
    H, W = 12, 16
    tx = torch.tensor([[[5.5, -40.0, 2.0]]])
    rows = torch.arange(H).view(1, 1, H, 1)
    cols = torch.arange(W).view(1, 1, 1, W)
    d = ((rows - 5.5) ** 2 + (cols + 40.0) ** 2 + 4.0).sqrt()
    signals = -20 * torch.log10(d) - 60.0 - 10.0 * (cols >= 8)
    slope = radial_slope(frame_features(signals, tx)[0], tx)[0, 0]
    assert slope.shape == (H, W)
    wall = slope[:, 8]
    assert (wall < -2.3).all() and (wall > -2.5 - 1e-4).all()  # 10 dB = 2.5 units of 4 dB, times cos(angle)
    rest = torch.cat([slope[:, :8], slope[:, 9:]], dim=1)
    assert rest.abs().max() < 1e-3  # free space and the flat shadow behind the wall cost nothing


def test_radial_slope_needs_neighbours_and_positions() -> None:
    signals, tx = _signals()
    feats = frame_features(signals, tx)[0]
    assert torch.equal(radial_slope(feats, None), torch.zeros(2, 4, 16, 16))
    signals[0, 0, 5, 5] = float("nan")
    slope = radial_slope(frame_features(signals, tx)[0], tx)
    assert slope[0, 0, 5, 5] == 0 and torch.isfinite(slope).all() and slope.abs().max() <= 3.0
