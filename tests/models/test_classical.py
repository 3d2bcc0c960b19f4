from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tomoformer.checkpoint import load_checkpoint, save_checkpoint
from tomoformer.errors import ConfigError, DataError
from tomoformer.models.classical import RTIModel, ThresholdModel, fill_from_neighbours


def _iou(logits: torch.Tensor, target: torch.Tensor) -> float:
    pred, target = logits > 0, target > 0.5
    return float((pred & target).sum() / (pred | target).sum().clamp_min(1))


def _threshold_batch(gen: torch.Generator, B: int = 4) -> dict[str, torch.Tensor]:
    buildings = (torch.rand(B, 4, 4, generator=gen) < 0.3).float().repeat_interleave(4, 1).repeat_interleave(4, 2)
    signals = -25 * buildings[:, None] + torch.randn(B, 4, 16, 16, generator=gen) * 2
    signals = signals + torch.randn(B, 4, 1, 1, generator=gen) * 30  # unknown per-frame offsets
    signals[:, :, :2, :2] = float("nan")  # a never-received corner, which is a building
    buildings[:, :2, :2] = 1
    return {"signals": signals, "tx_pos": None, "buildings": buildings}


def test_threshold_fit_beats_all_zero_and_round_trips() -> None:
    gen = torch.Generator().manual_seed(0)
    model = ThresholdModel()
    assert model.requires_fit
    model.fit([_threshold_batch(gen) for _ in range(3)])
    assert int(model.mode) == 1 and float(model.fit_iou) > 0.8
    test = _threshold_batch(gen)
    logits = model(test["signals"])
    assert logits.shape == (4, 16, 16) and logits.abs().max() <= 10
    assert _iou(logits, test["buildings"]) > 0.8  # predicting all zero gives IoU 0
    clone = ThresholdModel()
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone(test["signals"]), logits)


def test_threshold_keeps_never_received_rule_when_better() -> None:
    gen = torch.Generator().manual_seed(1)
    signals = torch.randn(2, 3, 8, 8, generator=gen)
    buildings = (torch.rand(2, 8, 8, generator=gen) < 0.3).float()
    signals[buildings[:, None].expand_as(signals) > 0] = float("nan")
    model = ThresholdModel()
    model.fit([{"signals": signals, "tx_pos": None, "buildings": buildings}])
    assert int(model.mode) == 0 and float(model.fit_iou) == 1.0


def _block_problem(gen: torch.Generator, B: int = 2, T: int = 12, n: int = 16):
    """Transmitters around a 16x16 area with one 4x4 block; links crossing it lose 15 dB."""
    buildings = torch.zeros(B, n, n)
    tx = torch.zeros(B, T, 3)
    signals = torch.zeros(B, T, n, n)
    rows, cols = torch.meshgrid(torch.arange(n).float(), torch.arange(n).float(), indexing="ij")
    for b in range(B):
        r0, c0 = torch.randint(4, n - 8, (2,), generator=gen).tolist()
        buildings[b, r0 : r0 + 4, c0 : c0 + 4] = 1
        angles = torch.rand(T, generator=gen) * 2 * torch.pi
        tx[b, :, 0] = n / 2 + 0.75 * n * torch.sin(angles)
        tx[b, :, 1] = n / 2 + 0.75 * n * torch.cos(angles)
        tx[b, :, 2] = 2.0
        for t in range(T):
            d = ((rows - tx[b, t, 0]) ** 2 + (cols - tx[b, t, 1]) ** 2 + 4).sqrt()
            s = torch.linspace(0, 1, 40).view(-1, 1, 1)
            pr = (tx[b, t, 0] + s * (rows - tx[b, t, 0])).round().long()
            pc = (tx[b, t, 1] + s * (cols - tx[b, t, 1])).round().long()
            inside = (pr >= 0) & (pr < n) & (pc >= 0) & (pc < n)
            hits = buildings[b][pr.clamp(0, n - 1), pc.clamp(0, n - 1)] * inside
            blocked = hits.sum(0) / 40 * d  # cells of building crossed by the straight ray
            signals[b, t] = -20 * torch.log10(d) - 6 * blocked + torch.randn(n, n, generator=gen) * 0.5 - 40
    return {"signals": signals, "tx_pos": tx, "buildings": buildings}


def test_rti_recovers_a_block() -> None:
    gen = torch.Generator().manual_seed(0)
    model = RTIModel(max_links=1500, iter_lim=100, alpha_grid=(1.0, 10.0))
    model.fit([_block_problem(gen)])
    test = _block_problem(gen, B=1)
    logits = model(test["signals"], test["tx_pos"])
    assert logits.shape == (1, 16, 16) and torch.isfinite(logits).all()
    chance = float(test["buildings"].mean())  # IoU of predicting "building" everywhere
    assert _iou(logits, test["buildings"]) > chance + 0.25
    clone = RTIModel(max_links=1500, iter_lim=100)
    clone.load_state_dict(model.state_dict())
    assert float(clone.alpha) == float(model.alpha)


def test_rti_needs_tx_pos() -> None:
    with pytest.raises(DataError, match="tx_pos"):
        RTIModel()(torch.randn(1, 2, 8, 8), None)


def test_rti_handles_nan_and_unknown_tx() -> None:
    signals = torch.randn(1, 3, 9, 7)
    signals[0, 0] = float("nan")
    tx = torch.rand(1, 3, 3) * 5
    tx[0, 1] = float("nan")
    out = RTIModel()(signals, tx)
    assert out.shape == (1, 9, 7) and torch.isfinite(out).all()
    assert torch.isfinite(RTIModel()(signals, torch.full_like(tx, float("nan")))).all()


def test_fill_from_neighbours_fills_only_missing_cells() -> None:
    signals = torch.full((1, 1, 7, 7), float("nan"))
    signals[0, 0, 0, 0], signals[0, 0, 0, 2] = -50.0, -70.0
    filled = fill_from_neighbours(signals, radius=1)
    assert filled[0, 0, 0, 0] == -50 and filled[0, 0, 0, 2] == -70  # measured cells unchanged
    assert filled[0, 0, 0, 1] == -60 and filled[0, 0, 1, 1] == -60  # mean of the measured cells in the window
    assert filled[0, 0, 1, 0] == -50
    assert torch.isnan(filled[0, 0, 4, 4])  # no measured cell within the radius


def test_threshold_neighbour_fill_helps_on_sparse_data() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [_threshold_batch(gen) for _ in range(4)]
    for batch in batches:  # keep 25 % of the cells of every frame
        batch["signals"][torch.rand(batch["signals"].shape, generator=gen) > 0.25] = float("nan")
    fit, test = batches[:3], batches[3]
    plain, filled = ThresholdModel(), ThresholdModel(fill="neighbours", fill_radius=1)
    plain.fit(fit)
    filled.fit(fit)
    iou_plain = _iou(plain(test["signals"]), test["buildings"])
    iou_filled = _iou(filled(test["signals"]), test["buildings"])
    assert iou_filled > iou_plain + 0.05, (iou_plain, iou_filled)  # measured: 0.63 -> 0.73
    assert "fill=neighbours" in filled.describe() and "fill" not in plain.describe()
    with pytest.raises(ConfigError, match="fill"):
        ThresholdModel(fill="nearest")


class _AlphaProbe(RTIModel):
    """An RTI whose image is the truth plus noise that grows with |log10(alpha) - log10(best)|."""

    best = 0.01

    def _solve(self, Wm, y, alpha, H, W):
        rng = np.random.default_rng(0)
        noise = rng.normal(size=H * W) * abs(np.log10(alpha) - np.log10(self.best))
        return self.truth + noise


def _probe(**kwargs: Any) -> tuple[_AlphaProbe, list[dict[str, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(0)
    batch = _block_problem(gen, B=1)
    model = _AlphaProbe(max_links=500, ellipse_grid=(0.5,), links_grid=(500,), **kwargs)
    model.truth = batch["buildings"].flatten().double().numpy()
    return model, [batch]


def test_rti_extends_alpha_grid_past_its_edge() -> None:
    model, batches = _probe(alpha_grid=(1.0, 10.0, 100.0), max_extensions=3)
    model.fit(batches)
    assert float(model.alpha) == pytest.approx(0.01) and not bool(model.alpha_on_edge)
    assert float(model.fit_iou) == 1.0 and "edge" not in model.describe()


def test_rti_reports_alpha_still_on_edge() -> None:
    model, batches = _probe(alpha_grid=(1.0, 10.0, 100.0), max_extensions=1)
    model.fit(batches)
    assert float(model.alpha) == pytest.approx(0.1) and bool(model.alpha_on_edge)
    assert "still on the edge" in model.describe()


def test_rti_chosen_values_travel_in_the_checkpoint(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    model = RTIModel(
        max_links=500, iter_lim=50, alpha_grid=(1.0, 10.0), ellipse_grid=(0.5, 2.0), links_grid=(300, 1500)
    )
    model.fit([_block_problem(gen)])
    assert float(model.ellipse_excess) in (0.5, 2.0) and int(model.max_links) in (300, 1500)
    path = save_checkpoint(tmp_path / "rti.ckpt", model, {"model": "rti", "model_kwargs": {"iter_lim": 50}})
    loaded = load_checkpoint(path).model
    for name in ("alpha", "ellipse_excess", "max_links", "threshold", "alpha_on_edge"):
        assert torch.equal(getattr(loaded, name), getattr(model, name)), name
    test = _block_problem(gen, B=1)
    torch.testing.assert_close(loaded(test["signals"], test["tx_pos"]), model(test["signals"], test["tx_pos"]))
    assert "links per sample" in model.describe()


def test_training_fits_classical_models_on_unaugmented_training_split(toy_dataset: Path, tmp_path: Path) -> None:
    from tomoformer.data.datamodule import AugmentOptions, SignalMapDataset, collate, split_indices
    from tomoformer.data.format import open_dataset
    from tomoformer.tasks.train import TrainConfig, run_training

    # Heavy augmentation: had the fit seen augmented batches, it would have chosen another rule or threshold.
    augment = AugmentOptions(min_keep_fraction=0.2, max_floor_fraction=0.9)
    config = TrainConfig(
        data=str(toy_dataset), out=str(tmp_path / "run"), model="threshold", augment=augment, progress=False
    )
    fitted = load_checkpoint(run_training(config).best_checkpoint).model
    train_idx, _ = split_indices(16, config.val_fraction, config.seed)
    expected = ThresholdModel()
    with open_dataset(toy_dataset) as source:
        expected.fit([collate([SignalMapDataset(source, train_idx)[i] for i in range(len(train_idx))])])
    for name in ("mode", "feature", "threshold", "fit_iou"):
        torch.testing.assert_close(getattr(fitted, name), getattr(expected, name), msg=name)
