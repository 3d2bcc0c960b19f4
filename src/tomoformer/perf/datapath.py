"""How much of a training step waits for data: the real loaders (host workers or device-resident) feeding a
real training step, against the same step on a batch that is already on the device.

Two figures, both from wall-clock time with the device synchronised only before and after the timed steps:

* ``host_wait_fraction``: the time the training loop spent inside ``next(loader)``, over the total. The host
  waits there while the device may still run queued work, so this bounds the device idle time from above.
* ``stall_fraction``: ``1 - compute / total``, where ``compute`` is the time of the same number of steps on a
  resident batch: the share of the run the data path really cost (0 when loading is fully hidden).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from tomoformer.data.transforms import augment_from_options
from tomoformer.perf.measure import Batch, Step, synchronize, time_steps


@dataclass
class DataPathResult:
    """Throughput with real data and the share of the time it cost."""

    source: str
    samples_per_s: float
    compute_samples_per_s: float
    host_wait_fraction: float
    stall_fraction: float


def endless(loader: Iterable[Batch]) -> Iterator[Batch]:
    """Batches of ``loader`` epoch after epoch, telling it or its sampler the epoch (as the training loop does)."""
    epoch = 0
    while True:
        batch_sampler = getattr(loader, "batch_sampler", None)
        targets = (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None))
        for target in {id(t): t for t in targets if hasattr(t, "set_epoch")}.values():
            target.set_epoch(epoch)
        yield from loader
        epoch += 1


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Asynchronous copy of a (pinned) host batch; a no-op for batches already on ``device``."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def measure_data_path(
    step: Step, loader: Iterable[Batch], device: torch.device, steps: int, warmup: int = 2, source: str = ""
) -> DataPathResult:
    """Time ``steps`` training steps fed by ``loader`` and the same steps on one resident batch."""
    batches = endless(loader)
    batch = None
    for _ in range(max(warmup, 1)):
        batch = to_device(next(batches), device)
        step(batch)
    n_samples, waited = 0, 0.0
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        host = next(batches)
        waited += time.perf_counter() - t0
        batch = to_device(host, device)
        n_samples += int(batch["signals"].shape[0])
        step(batch)
    synchronize(device)
    total = time.perf_counter() - start
    assert batch is not None
    compute = time_steps(step, batch, steps, device)
    per_batch = n_samples / steps
    return DataPathResult(
        source=source,
        samples_per_s=n_samples / total,
        compute_samples_per_s=per_batch * steps / compute,
        host_wait_fraction=waited / total,
        stall_fraction=max(0.0, 1.0 - compute / total),
    )


def open_loader(
    spec: str,
    device: torch.device,
    batch_size: int,
    num_workers: int = 0,
    on_device: bool = False,
    frames: int = 64,
    size: int = 100,
    seed: int = 0,
) -> tuple[Iterable[Batch], int, int]:
    """The training loader for ``spec`` (a dataset path, or ``sim`` for the simulator stream at ``frames`` x
    ``size``) with training augmentation (D4); ``on_device``: the store held in device memory, or the
    simulator's signals made on the device. Returns (loader, T, H)."""
    from tomoformer.data.datamodule import (
        AugmentOptions,
        EpochShuffleSampler,
        ShardedBatchSampler,
        SignalMapDataset,
        make_loader,
    )

    augment = AugmentOptions()
    if spec == "sim":
        from tomoformer.data.stream import DeviceSimulatorStream, SimulatorStream
        from tomoformer.sim.config import SimConfig

        config = SimConfig(frames=frames, size=size)
        if on_device:
            return DeviceSimulatorStream(config, 64 * batch_size, device, batch_size, seed, augment), frames, size
        dataset = SimulatorStream(config, 64 * batch_size, seed, augment_from_options(augment))
    else:
        from tomoformer.data.format import open_dataset

        source = open_dataset(Path(spec))
        _, frames, size, _ = source.shape
        if on_device:
            from tomoformer.data.device import DeviceDataset

            return DeviceDataset(source, None, device, batch_size, augment, seed=seed), frames, size
        dataset = SignalMapDataset(source, augment=augment_from_options(augment), seed=seed)
    sampler = EpochShuffleSampler(len(dataset), seed)
    batches = ShardedBatchSampler(len(dataset), batch_size, sampler, epoch_keys=True)
    return make_loader(dataset, num_workers=num_workers, batch_sampler=batches), frames, size
