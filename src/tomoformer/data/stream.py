"""Training data simulated on the fly: new samples every epoch, deterministic under (seed, epoch).

:class:`SimulatorStream` is a map-style dataset of ``samples_per_epoch`` items whose item ``i`` in epoch ``e`` is
sample ``e * samples_per_epoch + i`` of the simulated dataset defined by (config, seed). Because it is map-style,
any sampler works on top of it: :class:`~tomoformer.data.datamodule.EpochShuffleSampler` shuffles within an epoch
and :class:`~tomoformer.data.datamodule.ShardedBatchSampler` shards it across ranks, each rank seeing distinct
samples. A resumed run sees exactly the samples of an uninterrupted one, since every sample depends only on
(seed, index).

Items are the same dicts as :class:`~tomoformer.data.datamodule.SignalMapDataset` gives: ``signals`` float32
``[T, H, W]`` dB (NaN = missing), ``tx_pos`` float32 ``[T, 3]`` in the model convention, ``buildings`` float32
``[H, W]``, ``group`` int64 and ``index`` int64 (the simulated sample index).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tomoformer.data.datamodule import AugmentOptions, EpochShuffleSampler, SplitDataModule, model_tx_pos, plan_batches
from tomoformer.data.transforms import Augment, augment_from_options
from tomoformer.sim import SimConfig, dataset_attrs, prepare, propagate, simulate_samples


class SimulatorStream(Dataset):
    """``samples_per_epoch`` freshly simulated samples per epoch (``fixed=True``: the same ones every epoch).

    A fixed stream (a validation set) is simulated once, at construction, and kept in memory.
    """

    # Accepts (epoch, i) keys from ShardedBatchSampler.
    epoch_keys = True

    def __init__(
        self,
        config: SimConfig,
        samples_per_epoch: int,
        seed: int = 0,
        augment: Augment | None = None,
        fixed: bool = False,
    ) -> None:
        if samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self.config = config
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.augment = augment
        self.fixed = fixed
        self.epoch = 0
        self.cache: dict[str, np.ndarray] | None = None
        if fixed:
            self.cache = simulate_samples(config, seed, 0, samples_per_epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the samples of ``epoch`` (Lightning and :class:`MappingTask` call this before every epoch)."""
        self.epoch = epoch

    def sample_index(self, i: int, epoch: int | None = None) -> int:
        """The simulated sample behind item ``i`` in ``epoch`` (default: the current epoch)."""
        if not 0 <= i < self.samples_per_epoch:
            raise IndexError(f"item {i} out of range for {self.samples_per_epoch} samples per epoch")
        epoch = self.epoch if epoch is None else epoch
        return i if self.fixed else epoch * self.samples_per_epoch + i

    def raw(self, i: int, epoch: int | None = None) -> dict[str, np.ndarray]:
        """The simulator's arrays for item ``i`` (no leading N axis; tx_pos height in metres)."""
        if self.cache is not None:
            return {key: value[i] for key, value in self.cache.items()}
        sample = simulate_samples(self.config, self.seed, self.sample_index(i, epoch), 1)
        return {key: value[0] for key, value in sample.items()}

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """Item ``i`` of the current epoch (``key = i``) or of ``epoch`` (``key = (epoch, i)``, as
        :class:`~tomoformer.data.datamodule.ShardedBatchSampler` sends it, so that persistent workers follow
        the epochs)."""
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        index = self.sample_index(i, epoch)
        raw = self.raw(i, epoch)
        item: dict[str, torch.Tensor] = {
            "signals": torch.from_numpy(raw["signals"].astype(np.float32)),
            "tx_pos": model_tx_pos(raw["tx_pos"], self.config.cell_size_m, self.config.rx_height_m),
            "buildings": torch.from_numpy(raw["buildings"].astype(np.float32)),
            "group": torch.tensor(int(raw["group"])),
            "index": torch.tensor(index),
        }
        if self.augment is not None:
            generator = torch.Generator().manual_seed(hash((self.seed, epoch, index)) % 2**63)
            item.update(self.augment(item, generator))
        return item


class SimulatorDataModule(SplitDataModule):
    """Endless simulated training data and a fixed simulated validation set from a separate seed.

    Validation samples come from seed ``val_seed`` (default ``seed + 1``): the simulator seeds every sample by
    (seed, index), so they never coincide with training samples.
    """

    def __init__(
        self,
        config: SimConfig,
        samples_per_epoch: int = 1024,
        val_samples: int = 64,
        batch_size: int = 8,
        num_workers: int = 0,
        augment: AugmentOptions | None = None,
        seed: int = 0,
        val_seed: int | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, augment, seed)
        self.config = config
        self.samples_per_epoch = samples_per_epoch
        self.val_samples = val_samples
        self.val_seed = seed + 1 if val_seed is None else val_seed

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = SimulatorStream(
            self.config, self.samples_per_epoch, self.seed, augment_from_options(self.augment)
        )
        self.val_set = SimulatorStream(self.config, self.val_samples, self.val_seed, fixed=True)

    @property
    def attrs(self) -> dict[str, Any]:
        """Dataset attributes of the simulated data (cell size, frequency, receiver height, ...)."""
        return dataset_attrs(self.config)


class DeviceSimulatorStream:
    """Endless simulated training batches whose signals are made on ``device`` and never leave it.

    Item ``i`` of epoch ``e`` is the simulated sample ``e * samples_per_epoch + i``, the same sample as
    :class:`SimulatorStream` gives (the simulator seeds every sample by (seed, index)); the epoch's order and
    the rank shares come from :class:`EpochShuffleSampler` and :func:`plan_batches`, as for stored data. Cities
    and transmitters are drawn on two host threads a few batches ahead; the propagation, shadowing, noise and
    sparsity of a whole batch run as one on the device. Per batch only the small host-side arrays (heights,
    transmitter positions) are copied to the device; the signals (T x H x W per sample) are never copied.
    Augmentation as :class:`~tomoformer.data.device.DeviceDataset` (one D4 element per sample, frame subset and
    sparsity per batch).

    The city drawing is NumPy on the host (about 1 ms per sample): it, not the device, bounds the rate.
    """

    def __init__(
        self,
        config: SimConfig,
        samples_per_epoch: int,
        device: str | torch.device,
        batch_size: int = 8,
        seed: int = 0,
        augment: AugmentOptions | None = None,
        rank: int = 0,
        world_size: int = 1,
        epoch_source: Callable[[], int] | None = None,
        ahead: int = 3,
    ) -> None:
        if samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self.config, self.samples_per_epoch, self.device = config, samples_per_epoch, torch.device(device)
        self.batch_size, self.seed, self.augment = batch_size, seed, augment
        self.rank, self.world_size, self.epoch_source, self.ahead = rank, world_size, epoch_source, ahead
        self.epoch = 0
        self._len = len(plan_batches(np.arange(samples_per_epoch), batch_size, rank, world_size))

    def set_epoch(self, epoch: int) -> None:
        """The epoch to iterate next when there is no ``epoch_source``."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self._len

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        from tomoformer.data.device import augment_batch, draw_d4

        epoch = self.epoch_source() if self.epoch_source is not None else self.epoch
        sampler = EpochShuffleSampler(self.samples_per_epoch, self.seed)
        sampler.set_epoch(epoch)
        order = np.fromiter(sampler, np.int64, self.samples_per_epoch) + epoch * self.samples_per_epoch
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        d4 = self.augment is not None and self.augment.d4
        plans = []
        for batch in plan_batches(order, self.batch_size, self.rank, self.world_size):
            k = draw_d4(rng, len(batch), True, d4)
            ordering = np.argsort(k, kind="stable")
            plans.append((batch[ordering], k[ordering]))
        generator = torch.Generator(device=self.device).manual_seed(int(rng.integers(2**62)))
        cfg = self.config
        with ThreadPoolExecutor(2) as pool:
            pending: deque[list[Future]] = deque()
            for b, (indices, k) in enumerate(plans):
                while len(pending) < self.ahead and b + len(pending) < len(plans):
                    upcoming = plans[b + len(pending)][0]
                    pending.append([pool.submit(prepare, cfg, self.seed, int(i)) for i in upcoming])
                samples = [future.result() for future in pending.popleft()]
                signals = propagate(cfg, samples, self.device)
                buildings = _upload(np.stack([s.heights > cfg.rx_height_m for s in samples]), self.device).float()
                tx = model_tx_pos(np.stack([s.tx_pos for s in samples]), cfg.cell_size_m, cfg.rx_height_m)
                tx = _upload(tx.numpy(), self.device)
                signals, buildings, tx = augment_batch(signals, buildings, tx, k, self.augment, rng, generator)
                group = np.array([s.group_id for s in samples], np.int64)
                yield {
                    "signals": signals,
                    "tx_pos": tx,
                    "buildings": buildings,
                    "group": _upload(group, self.device),
                    "index": _upload(indices.astype(np.int64), self.device),
                }


def _upload(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host array to ``device`` without waiting for queued device work (pinned, asynchronous on CUDA)."""
    x = torch.from_numpy(np.ascontiguousarray(array))
    return x.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else x.to(device)
