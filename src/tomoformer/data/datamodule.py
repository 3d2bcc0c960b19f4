"""Torch datasets and the Lightning DataModule that feed every model the same tensors.

Each item is a dict: ``signals`` float32 ``[T, H, W]`` dB (NaN = missing), ``tx_pos`` float32 ``[T, 3]`` in the
model convention (row, col, height above the receiver, all in cells), ``buildings`` float32 ``[H, W]``,
``group`` int64 and ``index`` int64 (position in the source file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tomoformer.data.format import SignalDataset, open_dataset
from tomoformer.data.transforms import Augment

# Datasets below this size are read once into RAM (float16), which is far faster than chunked reads.
IN_MEMORY_LIMIT_BYTES = 4 * 2**30


def model_tx_pos(tx_pos: np.ndarray | torch.Tensor, cell_size_m: float, rx_height_m: float) -> torch.Tensor:
    """Dataset ``tx_pos [..., 3]`` (row, col in cells; height in m) to the model convention (all in cells,
    height measured above the receiver)."""
    tx = torch.as_tensor(np.asarray(tx_pos, dtype=np.float32)).clone()
    tx[..., 2] = (tx[..., 2] - rx_height_m) / cell_size_m
    return tx


class SignalMapDataset(Dataset):
    """Samples of a :class:`SignalDataset` as model-ready tensors, optionally augmented."""

    def __init__(
        self,
        source: SignalDataset,
        indices: np.ndarray | None = None,
        augment: Augment | None = None,
        in_memory: bool | None = None,
        seed: int = 0,
    ) -> None:
        self.source = source
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        _, t, h, w = source.shape
        if in_memory is None:
            in_memory = len(self.indices) * t * h * w * 2 <= IN_MEMORY_LIMIT_BYTES
        self.cache: dict[str, np.ndarray] | None = None
        if in_memory and len(self.indices) > 0:
            self.cache = {key: source.read(key, self.indices) for key in source.arrays}
            self.cache["signals"] = self.cache["signals"].astype(np.float16, copy=False)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """New augmentations each epoch, yet the same for the same seed and epoch."""
        self.epoch = epoch

    def raw(self, i: int) -> dict[str, np.ndarray]:
        if self.cache is not None:
            return {key: value[i] for key, value in self.cache.items()}
        return self.source.sample(int(self.indices[i]))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        raw = self.raw(i)
        item: dict[str, torch.Tensor] = {
            "signals": torch.from_numpy(raw["signals"].astype(np.float32)),
            "index": torch.tensor(int(self.indices[i])),
        }
        if "tx_pos" in raw:
            item["tx_pos"] = model_tx_pos(raw["tx_pos"], self.source.cell_size_m, self.source.rx_height_m)
        if "buildings" in raw:
            item["buildings"] = torch.from_numpy(raw["buildings"].astype(np.float32))
        item["group"] = torch.tensor(int(raw["group"]) if "group" in raw else 0)
        if self.augment is not None:
            generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(self.indices[i]))) % 2**63)
            item.update(self.augment(item, generator))
        return item


@dataclass
class AugmentOptions:
    """Training-time augmentation: D4 symmetry, random frame subsets, random sparsity."""

    d4: bool = True
    min_frames: int | None = None
    max_frames: int | None = None
    min_keep_fraction: float | None = None

    def build(self) -> Augment | None:
        frames = (self.min_frames, self.max_frames) if self.max_frames else None
        keep = (self.min_keep_fraction, 1.0) if self.min_keep_fraction else None
        if not self.d4 and frames is None and keep is None:
            return None
        return Augment(d4=self.d4, frames=frames, keep_fraction=keep)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into train and validation indices (at least one of each if n > 1)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, round(n * val_fraction)), n - 1) if n > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class SplitDataModule(L.LightningDataModule):
    """Loaders over ``train_set`` (reshuffled per (seed, epoch)) and ``val_set``, which subclasses build in setup."""

    def __init__(self, batch_size: int, num_workers: int, augment: AugmentOptions | None, seed: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment or AugmentOptions()
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        return make_loader(
            self.train_set, self.batch_size, self.num_workers, EpochShuffleSampler(len(self.train_set), self.seed)
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return make_loader(self.val_set, self.batch_size, self.num_workers)


class SignalDataModule(SplitDataModule):
    """Train/validation loaders over dataset files; splits ``train`` when no validation file is given."""

    def __init__(
        self,
        train: str | os.PathLike[str],
        val: str | os.PathLike[str] | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 8,
        num_workers: int = 0,
        augment: AugmentOptions | None = None,
        seed: int = 0,
        require_labels: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, augment, seed)
        self.train_path, self.val_path = train, val
        # Self-supervised tasks read signals only, so they accept datasets without 'buildings'.
        self.require_labels = require_labels
        self.val_fraction = val_fraction

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train = open_dataset(self.train_path, require_buildings=self.require_labels)
        if self.val_path is not None:
            val = open_dataset(self.val_path, require_buildings=self.require_labels)
            train_idx, val_idx = np.arange(len(train)), np.arange(len(val))
        else:
            val = train
            train_idx, val_idx = split_indices(len(train), self.val_fraction, self.seed)
        self.train_set = SignalMapDataset(train, train_idx, augment=self.augment.build(), seed=self.seed)
        self.val_set = SignalMapDataset(val, val_idx, augment=None, seed=self.seed)

    @property
    def attrs(self) -> dict[str, Any]:
        self.setup()
        assert self.train_set is not None
        return self.train_set.source.attrs


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, sampler: Sampler | None = None) -> DataLoader:
    """A loader with our collate (pads frame subsets) and pinned memory when a GPU will read the batches."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        collate_fn=collate,
    )


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation each epoch that depends only on (seed, epoch), so a resumed run sees the same order
    as an uninterrupted one. Lightning calls ``set_epoch`` before every epoch."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items; frame subsets may differ in T, so shorter samples are padded with all-NaN frames."""
    t_max = max(item["signals"].shape[0] for item in items)
    batch: dict[str, torch.Tensor] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if key in ("signals", "tx_pos"):
            values = [_pad_frames(v, t_max) for v in values]
        batch[key] = torch.stack(values)
    return batch


def _pad_frames(x: torch.Tensor, t: int) -> torch.Tensor:
    if x.shape[0] == t:
        return x
    pad = torch.full((t - x.shape[0], *x.shape[1:]), float("nan"), dtype=x.dtype)
    return torch.cat([x, pad])
