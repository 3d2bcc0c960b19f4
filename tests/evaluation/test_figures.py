import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from tomoformer.errors import TomoFormerError
from tomoformer.evaluation.figures import (
    city_figure,
    comparison_figure,
    curves_figure,
    error_codes,
    sample_figure,
    save_figure,
)


@pytest.fixture
def sample():
    g = torch.Generator().manual_seed(0)
    signals = -80 + 10 * torch.randn(6, 16, 12, generator=g)
    signals[1, :4] = float("nan")
    tx_pos = torch.tensor([[2.0, 3.0, 10.0]] * 6)
    tx_pos[2] = float("nan")
    buildings = (torch.rand(16, 12, generator=g) > 0.6).to(torch.uint8)
    probabilities = torch.rand(16, 12, generator=g)
    return signals, tx_pos, buildings, probabilities


def _png_ok(fig, path):
    save_figure(fig, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_sample_figure_full_and_partial(sample, tmp_path):
    signals, tx_pos, buildings, probabilities = sample
    fig = sample_figure(signals, tx_pos, buildings, probabilities, title="test")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4 + 4  # 4 frames + probability, prediction, truth, errors
    _png_ok(fig, tmp_path / "full.png")
    # As in `data show`: no probabilities, so no prediction and no error map.
    fig = sample_figure(signals[:2].numpy(), None, buildings.numpy(), None)
    assert len(fig.axes) == 2 + 1
    _png_ok(fig, tmp_path / "data.png")
    assert len(sample_figure(None, None, None, probabilities).axes) == 2
    with pytest.raises(ValueError):
        sample_figure(None)


def test_transmitter_star_only_when_near_grid(sample):
    signals, _, _, _ = sample
    near = torch.tensor([[3.0, 4.0, 1.0]]).expand(6, 3)
    far = torch.tensor([[300.0, 4.0, 1.0]]).expand(6, 3)
    stars = lambda fig: sum(len(ax.lines) for ax in fig.axes)  # noqa: E731
    assert stars(sample_figure(signals, near)) == 4
    assert stars(sample_figure(signals, far)) == 0


def test_error_codes():
    pred = np.array([True, True, False, False])
    truth = np.array([True, False, True, False])
    assert error_codes(pred, truth).tolist() == [1, 2, 3, 0]


def test_comparison_figure(sample, tmp_path):
    signals, tx_pos, buildings, probabilities = sample
    fig = comparison_figure(signals, tx_pos, buildings, {"a": probabilities, "b": 1 - probabilities})
    assert len(fig.axes) == 2 * 3
    _png_ok(fig, tmp_path / "cmp.png")
    assert len(comparison_figure(None, None, None, {"a": probabilities}).axes) == 2


def test_curves_figure(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,train_loss,val_loss,val_iou\n"
        "0,9,0.9,,\n0,19,0.8,,\n0,19,,0.85,0.2\n1,29,0.6,,\n1,39,0.5,,\n1,39,,0.55,0.4\n"
    )
    fig = curves_figure(csv)
    assert len(fig.axes) == 2
    loss_ax, score_ax = fig.axes
    assert {line.get_label() for line in loss_ax.lines} == {"train_loss", "val_loss"}
    train = next(line for line in loss_ax.lines if line.get_label() == "train_loss")
    assert np.allclose(train.get_ydata(), [0.85, 0.55])  # mean per epoch
    assert [line.get_label() for line in score_ax.lines] == ["val_iou"]
    _png_ok(fig, tmp_path / "curves.png")
    with pytest.raises(TomoFormerError):
        curves_figure(tmp_path / "missing.csv")


def test_city_figure(sample, tmp_path):
    signals, tx_pos, _, _ = sample
    heights = torch.rand(16, 12) * 20
    fig = city_figure(heights, signals, tx_pos, n_frames=3)
    assert sum(len(ax.images) for ax in fig.axes) == 4  # heights + 3 signal maps (colorbars add no images)
    _png_ok(fig, tmp_path / "city.png")
    assert len(city_figure(heights).axes) == 2  # heights + its colour bar
