"""Training data simulated on the fly: new samples every epoch, deterministic under (seed, epoch).

:class:`SimulatorStream` is a map-style dataset of ``samples_per_epoch`` items whose item ``i`` in epoch ``e`` is
sample ``e * samples_per_epoch + i`` of the simulated dataset defined by (config, seed). Because it is map-style,
any sampler works on top of it: :class:`~tomoformer.data.datamodule.EpochShuffleSampler` shuffles within an epoch
and Lightning's ``DistributedSampler`` shards it across ranks, each rank seeing distinct samples. A resumed run sees
exactly the samples of an uninterrupted one, since every sample depends only on (seed, index).

Items are the same dicts as :class:`~tomoformer.data.datamodule.SignalMapDataset` gives: ``signals`` float32
``[T, H, W]`` dB (NaN = missing), ``tx_pos`` float32 ``[T, 3]`` in the model convention, ``buildings`` float32
``[H, W]``, ``group`` int64 and ``index`` int64 (the simulated sample index).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tomoformer.data.datamodule import AugmentOptions, SplitDataModule, model_tx_pos
from tomoformer.data.transforms import Augment
from tomoformer.sim.config import SimConfig
from tomoformer.sim.simulate import dataset_attrs, simulate_samples


class SimulatorStream(Dataset):
    """``samples_per_epoch`` freshly simulated samples per epoch (``fixed=True``: the same ones every epoch).

    A fixed stream (a validation set) is simulated once, at construction, and kept in memory.
    """

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

    def sample_index(self, i: int) -> int:
        """The simulated sample behind item ``i`` in the current epoch."""
        if not 0 <= i < self.samples_per_epoch:
            raise IndexError(f"item {i} out of range for {self.samples_per_epoch} samples per epoch")
        return i if self.fixed else self.epoch * self.samples_per_epoch + i

    def raw(self, i: int) -> dict[str, np.ndarray]:
        """The simulator's arrays for item ``i`` (no leading N axis; tx_pos height in metres)."""
        if self.cache is not None:
            return {key: value[i] for key, value in self.cache.items()}
        sample = simulate_samples(self.config, self.seed, self.sample_index(i), 1)
        return {key: value[0] for key, value in sample.items()}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        index = self.sample_index(i)
        raw = self.raw(i)
        item: dict[str, torch.Tensor] = {
            "signals": torch.from_numpy(raw["signals"].astype(np.float32)),
            "tx_pos": model_tx_pos(raw["tx_pos"], self.config.cell_size_m, self.config.rx_height_m),
            "buildings": torch.from_numpy(raw["buildings"].astype(np.float32)),
            "group": torch.tensor(int(raw["group"])),
            "index": torch.tensor(index),
        }
        if self.augment is not None:
            generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) % 2**63)
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
        self.train_set = SimulatorStream(self.config, self.samples_per_epoch, self.seed, self.augment.build())
        self.val_set = SimulatorStream(self.config, self.val_samples, self.val_seed, fixed=True)

    @property
    def attrs(self) -> dict[str, Any]:
        """Dataset attributes of the simulated data (cell size, frequency, receiver height, ...)."""
        return dataset_attrs(self.config)
