"""GPU-resident training data: a whole store loaded once into device memory, batches augmented on the device.

For stores that fit in device memory (a 1000-sample, T=1000, 100x100 store is 20 GB in float16), reading,
augmenting and collating on the host cannot feed a GPU training thousands of samples per second; here a batch
is an ``index_select`` on the device followed by device-side D4 symmetries, frame subsets and sparsity, and
the host only draws a few random numbers per batch. Nothing is copied between host and device per batch
(one small copy of the epoch's sample order per epoch), and no step waits on the device.

Batches are the dicts :func:`~tomoformer.data.datamodule.collate` gives, already on the device: ``signals``
float32 ``[B, T, H, W]`` dB (NaN = missing), ``tx_pos`` float32 ``[B, T, 3]`` (model convention, present when
the store has it), ``buildings`` float32 ``[B, H, W]``, ``group`` and ``index`` int64 ``[B]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tomoformer.data.datamodule import (
    AugmentOptions,
    EpochShuffleSampler,
    SignalDataModule,
    model_tx_pos,
    plan_batches,
)
from tomoformer.data.format import SignalDataset
from tomoformer.data.transforms import (
    N_D4,
    SHAPE_KEEPING_D4,
    apply_d4,
    crop,
    log_uniform_count,
    random_floor,
    random_frame_subset,
    random_sparsity,
)
from tomoformer.errors import DataError

# Share of the free device memory the stored arrays may take: the model, activations and optimiser need the rest.
MAX_MEMORY_SHARE = 0.8
_SHAPE_KEEPING_D4 = np.array(SHAPE_KEEPING_D4)


def device_bytes(source: SignalDataset, n: int) -> int:
    """Bytes ``n`` samples of ``source`` take on the device (signals float16, buildings uint8, tx_pos float32)."""
    _, t, h, w = source.shape
    return n * (t * h * w * 2 + h * w + t * 3 * 4 + 16)


class DeviceDataset:
    """Samples ``indices`` of ``source`` in ``device`` memory, iterated as augmented batches for one rank.

    Iterating gives this rank's batches of the epoch: the order of :class:`EpochShuffleSampler` (``shuffle``) or
    0..n-1, split by :func:`plan_batches`, so ranks share the samples exactly once, as the host loaders do. The
    augmentation draws depend only on (seed, epoch, rank): one D4 element per sample, one frame count and one
    keep fraction per batch (like :class:`~tomoformer.data.transforms.Augment` on a batch).

    Args:
        source: an opened dataset; indices: its samples to hold (default: all).
        device: where the arrays live and the batches are made.
        augment: training-time augmentation, or None (validation).
        epoch_source: returns the current epoch (e.g. the trainer's) when iteration starts; else ``set_epoch``.
    """

    def __init__(
        self,
        source: SignalDataset,
        indices: np.ndarray | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        augment: AugmentOptions | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_source: Callable[[], int] | None = None,
        chunk: int = 16,
    ) -> None:
        self.source = source
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.device = torch.device(device)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.augment = augment
        self.epoch_source = epoch_source
        self.epoch = 0
        self._check_fits()
        n = len(self.indices)
        _, t, h, w = source.shape
        self.signals = torch.empty((n, t, h, w), dtype=torch.float16, device=self.device)
        self.buildings = torch.zeros((n, h, w), dtype=torch.uint8, device=self.device)
        self.tx_pos = torch.empty((n, t, 3), device=self.device) if "tx_pos" in source.arrays else None
        self.group = torch.zeros(n, dtype=torch.int64, device=self.device)
        self.index = torch.from_numpy(self.indices).to(self.device)
        # Chunked reads keep host memory bounded (one chunk), whatever the store size.
        for lo in range(0, n, chunk):
            part = self.indices[lo : lo + chunk]
            hi = lo + len(part)
            self.signals[lo:hi] = torch.from_numpy(source.read("signals", part).astype(np.float16))
            if "buildings" in source.arrays:
                self.buildings[lo:hi] = torch.from_numpy(source.read("buildings", part).astype(np.uint8))
            if self.tx_pos is not None:
                self.tx_pos[lo:hi] = model_tx_pos(source.read("tx_pos", part), source.cell_size_m, source.rx_height_m)
            if "group" in source.arrays:
                self.group[lo:hi] = torch.from_numpy(source.read("group", part).astype(np.int64))
        self.has_buildings = "buildings" in source.arrays
        self._len = len(plan_batches(np.arange(n), batch_size, rank, world_size))

    def _check_fits(self) -> None:
        need = device_bytes(self.source, len(self.indices))
        if self.device.type != "cuda":
            return
        free, _ = torch.cuda.mem_get_info(self.device)
        if need > MAX_MEMORY_SHARE * free:
            raise DataError(
                f"{self.source.path}: {len(self.indices)} samples need {need / 2**30:.1f} GiB on {self.device}, "
                f"{free / 2**30:.1f} GiB free: drop --data-on-device (workers read the store instead)"
            )

    def set_epoch(self, epoch: int) -> None:
        """The epoch to iterate next when there is no ``epoch_source`` (MappingTask calls this every epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return self._len

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        epoch = self.epoch_source() if self.epoch_source is not None else self.epoch
        n = len(self.indices)
        if self.shuffle:
            sampler = EpochShuffleSampler(n, self.seed)
            sampler.set_epoch(epoch)
            order = np.fromiter(sampler, np.int64, n)
        else:
            order = np.arange(n)
        batches = plan_batches(order, self.batch_size, self.rank, self.world_size)
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        _, _, h, w = self.signals.shape
        d4 = self.augment is not None and self.augment.d4
        plans = []
        for batch in batches:
            k = draw_d4(rng, len(batch), h == w, d4)
            # Samples sharing a D4 element are made contiguous, so each element is applied to one slice.
            ordering = np.argsort(k, kind="stable")
            plans.append((batch[ordering], k[ordering]))
        flat = np.concatenate([b for b, _ in plans]) if plans else np.zeros(0, np.int64)
        positions = _to_device(torch.from_numpy(flat), self.device)
        generator = torch.Generator(device=self.device).manual_seed(int(rng.integers(2**62)))
        start = 0
        for batch, k in plans:
            idx = positions[start : start + len(batch)]
            start += len(batch)
            yield self._make_batch(idx, k, rng, generator)

    def _make_batch(
        self, idx: Tensor, k: np.ndarray, rng: np.random.Generator, generator: torch.Generator
    ) -> dict[str, Tensor]:
        signals = self.signals.index_select(0, idx).float()
        buildings = self.buildings.index_select(0, idx).float()
        tx = self.tx_pos.index_select(0, idx) if self.tx_pos is not None else None
        signals, buildings, tx = augment_batch(signals, buildings, tx, k, self.augment, rng, generator)
        batch = {"signals": signals, "group": self.group.index_select(0, idx), "index": self.index.index_select(0, idx)}
        if tx is not None:
            batch["tx_pos"] = tx
        if self.has_buildings:
            batch["buildings"] = buildings
        return batch


def draw_d4(rng: np.random.Generator, n: int, square: bool, enabled: bool) -> np.ndarray:
    """One D4 element per sample (only the shape-keeping ones for non-square grids; zeros when disabled)."""
    if not enabled:
        return np.zeros(n, np.int64)
    return rng.choice(np.arange(N_D4) if square else _SHAPE_KEEPING_D4, n)


def augment_batch(
    signals: Tensor,
    buildings: Tensor,
    tx: Tensor | None,
    k: np.ndarray,
    options: AugmentOptions | None,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Augment a device batch without host round trips: D4 element ``k[i]`` for sample i (``k`` sorted, so
    each element is applied to one slice), then one frame subset and one sparsity level for the batch, drawn
    from ``rng`` (host numbers) and ``generator`` (device tensors), as :class:`~tomoformer.data.transforms.Augment`
    orders them (a ``crop`` window, one for the batch, first)."""
    whole = bool(
        options is not None and options.crop and options.whole_fraction and rng.random() < options.whole_fraction
    )
    if options is not None and options.crop and not whole and max(signals.shape[-2:]) > options.crop:
        H, W = signals.shape[-2:]
        size = min(options.crop, H, W)
        top, left = int(rng.integers(0, H - size + 1)), int(rng.integers(0, W - size + 1))
        signals, cropped, tx = crop(signals, buildings, tx, top, left, size)
        buildings = cropped if cropped is not None else buildings
    if k.any():
        parts = []
        for value in np.unique(k):
            lo, hi = np.searchsorted(k, value), np.searchsorted(k, value, side="right")
            parts.append(apply_d4(signals[lo:hi], buildings[lo:hi], tx[lo:hi] if tx is not None else None, int(value)))
        signals = torch.cat([p[0] for p in parts])
        buildings = torch.cat([p[1] for p in parts])
        tx = torch.cat([p[2] for p in parts]) if tx is not None else None
    if options is not None and options.max_frames:
        lo, hi = options.min_frames or 1, options.max_frames
        if options.frame_sampling == "log-uniform":
            n_frames = log_uniform_count(lo, hi, float(rng.random()))
        else:
            n_frames = int(rng.integers(lo, hi + 1))
        signals, tx = random_frame_subset(signals, tx, n_frames, generator)
    if options is not None and options.min_keep_fraction:
        keep = options.min_keep_fraction + (1 - options.min_keep_fraction) * float(rng.random())
        signals = random_sparsity(signals, keep, generator)
    if options is not None and options.max_floor_fraction:
        fraction = options.max_floor_fraction * float(rng.random())
        signals = torch.stack([random_floor(x, fraction, generator) for x in signals])
    return signals, buildings, tx


def _to_device(x: Tensor, device: torch.device) -> Tensor:
    """Copy without making the host wait for queued device work (pinned source, asynchronous copy)."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


class DeviceDataModule(SignalDataModule):
    """:class:`SignalDataModule` whose loaders are :class:`DeviceDataset` s on the trainer's device.

    The stores are opened (and split) in ``setup``; they are read into device memory when the trainer first
    asks for a loader, since only then is the device (this rank's GPU) known.
    """

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "_split", None) is not None:
            return
        from tomoformer.data.datamodule import open_split

        self._split = open_split(self.train_path, self.val_path, self.val_fraction, self.seed, self.require_labels)

    @property
    def attrs(self) -> dict[str, Any]:
        self.setup()
        return self._split[0].attrs

    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def train_dataloader(self) -> DeviceDataset:  # type: ignore[override]
        self.setup()
        if not isinstance(self.train_set, DeviceDataset):
            train, train_idx, _, _ = self._split
            rank, world = self.rank_and_world()
            self.train_set = DeviceDataset(
                train,
                train_idx,
                self._device(),
                self.batch_size,
                augment=self.augment,
                seed=self.seed,
                rank=rank,
                world_size=world,
                epoch_source=self.epoch_source(),
            )
        return self.train_set

    def val_dataloader(self) -> DeviceDataset:  # type: ignore[override]
        self.setup()
        if not isinstance(self.val_set, DeviceDataset):
            _, _, val, val_idx = self._split
            rank, world = self.rank_and_world()
            self.val_set = DeviceDataset(
                val, val_idx, self._device(), self.batch_size, None, False, self.seed, rank, world
            )
        return self.val_set
