"""SimulatorStream: new samples per epoch, reproducible per (seed, epoch), every sample once per epoch when
shuffled or sharded; SimulatorDataModule: a fixed validation set from another seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from tomoformer.data.datamodule import AugmentOptions, EpochShuffleSampler
from tomoformer.data.stream import DeviceSimulatorStream, SimulatorDataModule, SimulatorStream
from tomoformer.sim.config import SimConfig
from tomoformer.sim.simulate import simulate_samples

CONFIG = SimConfig(size=16, frames=3, n_angles=32)


def _signals(stream: SimulatorStream, epoch: int) -> torch.Tensor:
    stream.set_epoch(epoch)
    return torch.stack([stream[i]["signals"] for i in range(len(stream))])


def test_new_samples_each_epoch_and_same_for_same_seed_and_epoch() -> None:
    a, b = SimulatorStream(CONFIG, 3, seed=5), SimulatorStream(CONFIG, 3, seed=5)
    first, second = _signals(a, 0), _signals(a, 1)
    assert first.shape == (3, 3, 16, 16) and first.dtype == torch.float32
    assert not torch.equal(first.nan_to_num(), second.nan_to_num())
    torch.testing.assert_close(_signals(b, 1), second, equal_nan=True)  # a resumed run sees the same samples
    assert not torch.equal(_signals(SimulatorStream(CONFIG, 3, seed=6), 1).nan_to_num(), second.nan_to_num())


def test_item_matches_simulator_in_model_convention() -> None:
    stream = SimulatorStream(CONFIG, 4, seed=2)
    stream.set_epoch(2)
    item = stream[1]
    raw = simulate_samples(CONFIG, 2, 2 * 4 + 1, 1)
    assert int(item["index"]) == 9
    np.testing.assert_allclose(item["signals"].numpy(), raw["signals"][0])
    np.testing.assert_array_equal(item["buildings"].numpy(), raw["buildings"][0].astype(np.float32))
    expected_height = (raw["tx_pos"][0, :, 2] - CONFIG.rx_height_m) / CONFIG.cell_size_m
    np.testing.assert_allclose(item["tx_pos"][:, 2].numpy(), expected_height)
    np.testing.assert_allclose(item["tx_pos"][:, :2].numpy(), raw["tx_pos"][0, :, :2])
    with pytest.raises(IndexError):
        stream[4]


@pytest.mark.parametrize("epoch", [0, 3])
def test_shuffled_and_sharded_indices_cover_each_sample_once(epoch: int) -> None:
    n = 10
    stream = SimulatorStream(CONFIG, n, seed=0)
    stream.set_epoch(epoch)
    expected = set(range(epoch * n, (epoch + 1) * n))
    sampler = EpochShuffleSampler(n, seed=1)
    sampler.set_epoch(epoch)
    order = [stream.sample_index(i) for i in sampler]
    assert sorted(order) == sorted(expected) and order != sorted(order)
    seen: list[int] = []
    for rank in range(2):
        shard = DistributedSampler(stream, num_replicas=2, rank=rank, shuffle=True, seed=1)
        shard.set_epoch(epoch)
        seen += [stream.sample_index(i) for i in shard]
    assert sorted(seen) == sorted(expected)


def test_datamodule_fixed_validation_from_another_seed() -> None:
    dm = SimulatorDataModule(CONFIG, samples_per_epoch=4, val_samples=3, batch_size=2, seed=0)
    dm.setup()
    assert dm.val_set is not None and dm.train_set is not None
    val0 = torch.cat([b["signals"] for b in dm.val_dataloader()])
    dm.val_set.set_epoch(5)
    val5 = torch.cat([b["signals"] for b in dm.val_dataloader()])
    torch.testing.assert_close(val0, val5, equal_nan=True)
    np.testing.assert_allclose(val0.numpy(), simulate_samples(CONFIG, 1, 0, 3)["signals"])
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and batches[0]["tx_pos"].shape == (2, 3, 3)
    assert batches[0]["buildings"].shape == (2, 16, 16)
    assert dm.attrs["cell_size_m"] == CONFIG.cell_size_m
    with pytest.raises(ValueError):
        SimulatorStream(CONFIG, 0)


def test_device_stream_gives_the_simulator_samples_of_each_epoch_once_per_rank() -> None:
    streams = [DeviceSimulatorStream(CONFIG, 5, "cpu", batch_size=2, seed=0, rank=r, world_size=2) for r in (0, 1)]
    for stream in streams:
        stream.set_epoch(1)
    batches = [batch for stream in streams for batch in stream]
    assert len(streams[0]) == len(streams[1]) == 2
    index = torch.cat([b["index"] for b in batches])
    assert sorted(index.tolist()) == list(range(5, 10))  # epoch 1 = samples 5..9
    signals = torch.cat([b["signals"] for b in batches])
    reference = SimulatorStream(CONFIG, 5, seed=0)
    reference.set_epoch(1)
    for row, i in enumerate(index.tolist()):
        item = reference[i - 5]
        torch.testing.assert_close(signals[row], item["signals"], equal_nan=True)
        torch.testing.assert_close(torch.cat([b["tx_pos"] for b in batches])[row], item["tx_pos"])
        assert torch.equal(torch.cat([b["buildings"] for b in batches])[row], item["buildings"])
    augmented = DeviceSimulatorStream(CONFIG, 4, "cpu", 4, augment=AugmentOptions(d4=True, min_keep_fraction=0.5))
    batch = next(iter(augmented))
    assert batch["signals"].shape == (4, 3, 16, 16) and batch["buildings"].shape == (4, 16, 16)
    assert torch.isnan(batch["signals"]).float().mean() > torch.isnan(signals).float().mean()
