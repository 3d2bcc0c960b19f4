"""Data-path measurement: waiting for a slow loader shows up as host wait and stall; real loaders open."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import torch

from tomoformer.data.device import DeviceDataset
from tomoformer.data.stream import DeviceSimulatorStream
from tomoformer.perf.datapath import endless, measure_data_path, open_loader

CPU = torch.device("cpu")


class Loader:
    """Two batches per epoch, each ``delay`` seconds to produce; records the epochs it was told."""

    def __init__(self, delay: float) -> None:
        self.delay, self.epochs = delay, []

    @property
    def sampler(self) -> Loader:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for _ in range(2):
            time.sleep(self.delay)
            yield {"signals": torch.zeros(3, 1, 2, 2)}


def busy_step(batch: dict[str, torch.Tensor]) -> None:
    time.sleep(0.01)


def test_slow_loader_stalls_fast_one_does_not() -> None:
    slow = measure_data_path(busy_step, Loader(0.03), CPU, steps=4, warmup=1)
    fast = measure_data_path(busy_step, Loader(0.0), CPU, steps=4, warmup=1)
    assert slow.host_wait_fraction > 0.5 and slow.stall_fraction > 0.4
    assert fast.host_wait_fraction < 0.2 and fast.stall_fraction < 0.3
    assert slow.samples_per_s < fast.samples_per_s and slow.compute_samples_per_s > slow.samples_per_s


def test_endless_tells_the_sampler_each_epoch() -> None:
    loader = Loader(0.0)
    batches = endless(loader)
    for _ in range(5):
        next(batches)
    assert loader.epochs == [0, 1, 2]


def test_open_loader_host_and_device(toy_dataset: Path) -> None:
    loader, frames, size = open_loader(str(toy_dataset), CPU, batch_size=4)
    batch = next(iter(loader))
    assert (frames, size) == (4, 16) and batch["signals"].shape == (4, 4, 16, 16)
    resident, _, _ = open_loader(str(toy_dataset), CPU, batch_size=4, on_device=True)
    assert isinstance(resident, DeviceDataset) and len(resident) == 4
    simulated, frames, size = open_loader("sim", CPU, batch_size=2, on_device=True, frames=2, size=16)
    assert isinstance(simulated, DeviceSimulatorStream) and (frames, size) == (2, 16)
    assert next(iter(simulated))["signals"].shape == (2, 2, 16, 16)
