"""The device-resident dataset: every sample once per epoch and rank share, augmentation consistent across
signals, buildings and transmitter positions, repeatable per (seed, epoch), and usable by the trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tomoformer.data.datamodule import AugmentOptions, model_tx_pos
from tomoformer.data.device import DeviceDataset, device_bytes
from tomoformer.data.format import open_dataset
from tomoformer.data.transforms import apply_d4
from tomoformer.tasks.train import TrainConfig, run_training


def all_batches(ds: DeviceDataset) -> dict[str, torch.Tensor]:
    batches = list(ds)
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


def test_plain_batches_equal_the_store(toy_dataset: Path) -> None:
    source = open_dataset(toy_dataset)
    ds = DeviceDataset(source, np.arange(3, 13), batch_size=4, shuffle=False)
    assert len(ds) == 3 and ds.signals.dtype == torch.float16
    got = all_batches(ds)
    assert got["index"].tolist() == list(range(3, 13))
    expected = source.read("signals", np.arange(3, 13)).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(got["signals"].numpy(), expected)
    np.testing.assert_array_equal(got["buildings"].numpy(), source.read("buildings", np.arange(3, 13)))
    tx = model_tx_pos(source.read("tx_pos", np.arange(3, 13)), source.cell_size_m, source.rx_height_m)
    torch.testing.assert_close(got["tx_pos"], tx)
    assert device_bytes(source, 10) > ds.signals.numel() * 2


def test_d4_moves_signals_buildings_and_transmitters_together(toy_dataset: Path) -> None:
    source = open_dataset(toy_dataset)
    plain = all_batches(DeviceDataset(source, batch_size=16, shuffle=False))
    ds = DeviceDataset(source, batch_size=5, augment=AugmentOptions(d4=True, max_floor_fraction=None), seed=3)
    got = all_batches(ds)
    assert sorted(got["index"].tolist()) == list(range(16))
    used = set()
    for j, i in enumerate(got["index"].tolist()):
        matches = [
            k
            for k in range(8)
            if all(
                torch.equal(a, b) or torch.allclose(a, b, equal_nan=True)
                for a, b in zip(
                    apply_d4(plain["signals"][i], plain["buildings"][i], plain["tx_pos"][i], k),
                    (got["signals"][j], got["buildings"][j], got["tx_pos"][j]),
                    strict=True,
                )
            )
        ]
        assert matches, f"sample {i} is not a symmetry of the stored one"
        used.update(matches)
    assert len(used) > 2  # different samples get different symmetries


def test_crop_takes_one_window_per_batch_and_moves_transmitters(toy_dataset: Path) -> None:
    source = open_dataset(toy_dataset)
    plain = all_batches(DeviceDataset(source, batch_size=16, shuffle=False))
    augment = AugmentOptions(d4=False, max_floor_fraction=None, crop=6)
    batches = list(DeviceDataset(source, batch_size=4, augment=augment, seed=2))
    for batch in batches:
        assert batch["signals"].shape[-2:] == (6, 6) and batch["buildings"].shape[-2:] == (6, 6)
        i = batch["index"][0].item()
        top, left = (int(v) for v in (plain["tx_pos"][i, 0, :2] - batch["tx_pos"][0, 0, :2]))
        window = plain["buildings"][batch["index"]][:, top : top + 6, left : left + 6]
        assert torch.equal(batch["buildings"], window)


def test_epochs_repeat_per_seed_and_ranks_share_exactly_once(toy_dataset: Path) -> None:
    source = open_dataset(toy_dataset)
    options = AugmentOptions(d4=True, min_frames=2, max_frames=3, min_keep_fraction=0.5)
    a = DeviceDataset(source, batch_size=4, augment=options, seed=1)
    b = DeviceDataset(source, batch_size=4, augment=options, seed=1)
    b.set_epoch(0)
    first, again = list(a), list(b)
    for x, y in zip(first, again, strict=True):
        torch.testing.assert_close(x["signals"], y["signals"], equal_nan=True)
        assert x["signals"].shape[1] in (2, 3) and x["tx_pos"].shape[1] == x["signals"].shape[1]
    assert torch.isnan(first[0]["signals"]).float().mean() > 0.05  # sparsity on top of the stored NaN
    a.set_epoch(1)
    assert [b["index"].tolist() for b in a] != [b["index"].tolist() for b in first]
    shards = [DeviceDataset(source, np.arange(1, 12), batch_size=2, seed=1, rank=r, world_size=3) for r in range(3)]
    seen = [all_batches(s)["index"].tolist() for s in shards]
    assert sorted(i for indices in seen for i in indices) == list(range(1, 12))
    assert len({len(s) for s in shards}) == 1


def test_training_with_data_on_device(toy_dataset: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        data=str(toy_dataset),
        out=str(tmp_path / "run"),
        model="unet",
        model_kwargs={"base_channels": 4, "depth": 1},
        max_epochs=2,
        batch_size=4,
        progress=False,
        accelerator="cpu",
        data_on_device=True,
    )
    result = run_training(config)
    assert result.best_checkpoint.is_file() and 0.0 <= result.metrics["val_iou"] <= 1.0
