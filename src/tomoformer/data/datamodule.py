"""Torch datasets and the Lightning DataModule that feed every model the same tensors.

Each item is a dict: ``signals`` float32 ``[T, H, W]`` dB (NaN = missing), ``tx_pos`` float32 ``[T, 3]`` in the
model convention (row, col, height above the receiver, all in cells), ``buildings`` float32 ``[H, W]``,
``group`` int64 and ``index`` int64 (position in the source file).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tomoformer.data.augment_options import AugmentOptions
from tomoformer.data.format import SignalDataset, open_dataset, require_valid_values
from tomoformer.data.transforms import Augment, augment_from_options
from tomoformer.errors import DataError

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

    # Accepts (epoch, i) and (epoch, i, batch) keys from ShardedBatchSampler.
    epoch_keys = True
    batch_keys = True

    def __init__(
        self,
        source: SignalDataset,
        indices: np.ndarray | None = None,
        augment: Augment | None = None,
        in_memory: bool | None = None,
        seed: int = 0,
    ) -> None:
        # Train, predict and evaluate all read through here: none accepts values `data validate` rejects.
        require_valid_values(source)
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

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, torch.Tensor]:
        """Item ``i`` (``key = i``, augmented for the epoch last given to ``set_epoch``) or ``key = (epoch, i)``:
        :class:`ShardedBatchSampler` sends the epoch with the index, so that worker processes, which hold their
        own copy of this dataset, augment for the right epoch even when they persist across epochs. With
        ``key = (epoch, i, batch)`` the batch-level draws (frame count, window or whole tile) are seeded by
        (seed, epoch, batch), so every sample of a batch gets the same."""
        epoch, i, *batch = key if isinstance(key, tuple) else (self.epoch, key)
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
            generator = torch.Generator().manual_seed(hash((self.seed, epoch, int(self.indices[i]))) % 2**63)
            item.update(self.augment(item, generator, batch_generator(self.seed, epoch, batch)))
        return item


def batch_generator(seed: int, epoch: int, batch: list[int]) -> torch.Generator | None:
    """The generator of a batch's shared draws, seeded by (seed, epoch, batch number); None without a number."""
    if not batch:
        return None
    # Negative batch numbers keep these seeds apart from the per-sample ones, hash((seed, epoch, index)).
    return torch.Generator().manual_seed(hash((seed, epoch, -1 - int(batch[0]))) % 2**63)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into train and validation indices (at least one of each if n > 1)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, round(n * val_fraction)), n - 1) if n > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def open_split(
    train_path: str | os.PathLike[str],
    val_path: str | os.PathLike[str] | None,
    val_fraction: float,
    seed: int,
    require_labels: bool = True,
) -> tuple[SignalDataset, np.ndarray, SignalDataset, np.ndarray]:
    """(train source, its indices, validation source, its indices): all of ``val_path`` when given, else a seeded
    ``val_fraction`` of the training data."""
    train = open_dataset(train_path, require_buildings=require_labels)
    # Checked here too: the device data path reads the sources without a SignalMapDataset.
    _checked(train)
    if val_path is None:
        train_idx, val_idx = split_indices(len(train), val_fraction, seed)
        return train, train_idx, train, val_idx
    val = _checked(open_dataset(val_path, require_buildings=require_labels))
    return train, np.arange(len(train)), val, np.arange(len(val))


def _checked(source: SignalDataset) -> SignalDataset:
    """``source`` once :func:`require_valid_values` passed; closed (and the error raised) if not."""
    try:
        require_valid_values(source)
    except DataError:
        source.close()
        raise
    return source


class SplitDataModule(L.LightningDataModule):
    """Loaders over ``train_set`` (reshuffled per (seed, epoch)) and ``val_set``, which subclasses build in setup.

    Under DDP every rank reads its own shard (:class:`ShardedBatchSampler`): each sample exactly once per epoch
    over all ranks, for training and validation, with the same number of batches on every rank. Lightning's own
    ``DistributedSampler`` would pad the last round with duplicates, so ``fit_task`` turns it off for data
    modules that set ``shards_itself``.
    """

    shards_itself = True

    def __init__(self, batch_size: int, num_workers: int, augment: AugmentOptions | None, seed: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment or AugmentOptions()
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def rank_and_world(self) -> tuple[int, int]:
        """(global rank, world size) of the attached trainer; (0, 1) without one."""
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def epoch_source(self) -> Callable[[], int] | None:
        """The attached trainer's current epoch, read when an epoch's iteration starts; None without a trainer."""
        trainer = getattr(self, "trainer", None)
        return (lambda: trainer.current_epoch) if trainer is not None else None

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        rank, world = self.rank_and_world()
        shuffle = EpochShuffleSampler(len(self.train_set), self.seed)
        batches = ShardedBatchSampler(
            len(self.train_set),
            self.batch_size,
            shuffle,
            rank,
            world,
            self.epoch_source(),
            epoch_keys=getattr(self.train_set, "epoch_keys", False),
            batch_keys=getattr(self.train_set, "batch_keys", False),
        )
        return make_loader(self.train_set, num_workers=self.num_workers, batch_sampler=batches)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        rank, world = self.rank_and_world()
        batches = ShardedBatchSampler(len(self.val_set), self.batch_size, None, rank, world)
        return make_loader(self.val_set, num_workers=self.num_workers, batch_sampler=batches)


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
        train, train_idx, val, val_idx = open_split(
            self.train_path, self.val_path, self.val_fraction, self.seed, self.require_labels
        )
        self.train_set = SignalMapDataset(train, train_idx, augment=augment_from_options(self.augment), seed=self.seed)
        self.val_set = SignalMapDataset(val, val_idx, augment=None, seed=self.seed)

    @property
    def attrs(self) -> dict[str, Any]:
        self.setup()
        assert self.train_set is not None
        return self.train_set.source.attrs


def make_loader(
    dataset: Dataset,
    batch_size: int = 1,
    num_workers: int = 0,
    sampler: Sampler | None = None,
    batch_sampler: Sampler[list] | None = None,
) -> DataLoader:
    """A loader with our collate (pads frame subsets) and pinned memory when a GPU will read the batches.

    Workers keep ``prefetch_factor`` batches each in flight; pinned buffers make the host-to-device copy
    asynchronous. Workers persist across epochs (no re-spawn and re-opening of the Zarr store every epoch)
    unless that would freeze the augmentation: a worker's copy of a dataset with ``set_epoch`` only learns the
    epoch from ``(epoch, i)`` keys (a :class:`ShardedBatchSampler` with ``epoch_keys``).
    """
    workers: dict[str, Any] = {}
    if num_workers > 0:
        epoch_keys = getattr(batch_sampler, "epoch_keys", False)
        workers = {"persistent_workers": epoch_keys or not hasattr(dataset, "set_epoch"), "prefetch_factor": 4}
    batching = {"batch_sampler": batch_sampler} if batch_sampler is not None else {"batch_size": batch_size}
    return DataLoader(
        dataset,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        collate_fn=collate,
        **batching,
        **workers,
    )


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation each epoch that depends only on (seed, epoch), so a resumed run sees the same order
    as an uninterrupted one. Lightning calls ``set_epoch`` before every epoch."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


def plan_batches(order: np.ndarray, batch_size: int, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
    """Rank ``rank``'s batches of the samples ``order`` (all ranks together: each sample exactly once).

    Every rank gets the same number of batches, so DDP never waits on a rank that ran out:
    ``ceil(n / (world_size * batch_size))``, or ``n // world_size`` when there are too few samples for that
    many non-empty batches (then batches hold up to ``ceil(n / (world_size * (n // world_size)))`` samples,
    a little over ``batch_size``). The batches are consecutive runs of ``order``, full-size while enough
    samples remain for one per later batch; batch ``j`` goes to rank ``j % world_size``. With one rank this
    is plain chunking into ``batch_size`` (the last batch partial), as a DataLoader does.
    """
    n = len(order)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    if n < world_size:
        raise DataError(f"{n} samples cannot be shared by {world_size} ranks: use fewer devices or more data")
    total = world_size * min(-(-n // (world_size * batch_size)), n // world_size)
    if total * batch_size >= n:
        # Greedy: full batches, leaving at least one sample for every later batch.
        sizes, left = [], n
        for j in range(total):
            sizes.append(min(batch_size, left - (total - j - 1)))
            left -= sizes[-1]
    else:
        sizes = [n // total + (j < n % total) for j in range(total)]
    bounds = np.cumsum([0, *sizes])
    return [order[bounds[j] : bounds[j + 1]] for j in range(rank, total, world_size)]


class ShardedBatchSampler(Sampler[list]):
    """This rank's batches of indices: the order of ``sampler`` (an :class:`EpochShuffleSampler`; None =
    0..n-1 in order) split by :func:`plan_batches`.

    Lightning calls ``set_epoch`` on ``batch_sampler.sampler`` before every epoch. With ``epoch_keys`` (for
    datasets whose ``epoch_keys`` attribute is true) the keys are ``(epoch, index)``: the epoch travels with
    each index, so persistent worker processes, which hold their own copy of the dataset, augment for the
    right epoch; with ``batch_keys`` too, they are ``(epoch, index, batch)``, so the dataset can draw what a batch
    shares (its number of frames) from the batch's number.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        sampler: EpochShuffleSampler | None = None,
        rank: int = 0,
        world_size: int = 1,
        epoch_source: Callable[[], int] | None = None,
        epoch_keys: bool = False,
        batch_keys: bool = False,
    ) -> None:
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.sampler = sampler
        self.epoch_source = epoch_source
        self.epoch_keys = epoch_keys
        self.batch_keys = batch_keys and epoch_keys
        self._len = len(plan_batches(np.arange(n), batch_size, rank, world_size))

    def __iter__(self) -> Iterator[list]:
        # The trainer's epoch, when given, wins: on resume Lightning creates the loader iterator (and worker
        # processes prefetch from it) before it calls set_epoch.
        if self.sampler is not None and self.epoch_source is not None:
            self.sampler.set_epoch(self.epoch_source())
        epoch = self.sampler.epoch if self.sampler is not None else 0
        order = np.fromiter(self.sampler, np.int64, self.n) if self.sampler is not None else np.arange(self.n)
        for j, batch in enumerate(plan_batches(order, self.batch_size, self.rank, self.world_size)):
            if self.batch_keys:  # the batch's number over all ranks: batch j of rank r is r + j * world_size
                yield [(epoch, int(i), self.rank + j * self.world_size) for i in batch]
            else:
                yield [(epoch, int(i)) for i in batch] if self.epoch_keys else [int(i) for i in batch]

    def __len__(self) -> int:
        return self._len


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
