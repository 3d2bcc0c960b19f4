"""Training batches draw one frame count each (log-uniform in a range, capped at the frames a sample has) and, with
``crop`` and ``whole_fraction``, a share of whole-map batches; the draws repeat for the same seed and epoch."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import toy_arrays
from tomoformer.data.datamodule import (
    AugmentOptions,
    EpochShuffleSampler,
    ShardedBatchSampler,
    SignalMapDataset,
    make_loader,
)
from tomoformer.data.format import open_dataset, write_dataset
from tomoformer.data.transforms import augment_from_options


def _batches(path: Path, options: AugmentOptions, epoch: int = 0, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    dataset = SignalMapDataset(open_dataset(path), augment=augment_from_options(options), seed=seed)
    sampler = ShardedBatchSampler(
        len(dataset), 4, EpochShuffleSampler(len(dataset), seed), epoch_keys=True, batch_keys=True
    )
    sampler.sampler.set_epoch(epoch)
    return list(make_loader(dataset, batch_sampler=sampler))


def test_one_log_uniform_frame_count_per_batch_repeatable(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "t.zarr", toy_arrays(n=32, t=16, size=8), {"cell_size_m": 2.0})
    options = AugmentOptions(min_frames=1, max_frames=128, frame_sampling="log-uniform")
    counts = []
    for epoch in range(4):
        for batch in _batches(path, options, epoch):
            present = torch.isfinite(batch["signals"]).flatten(2).any(-1)  # [B, T]: no padded frames
            assert present.all()
            counts.append(batch["signals"].shape[1])
    assert min(counts) < 8 and max(counts) == 16  # capped at the 16 frames a sample has
    assert len(set(counts)) > 4
    first = [b["signals"] for b in _batches(path, options, 2)]
    again = [b["signals"] for b in _batches(path, options, 2)]
    assert all(torch.equal(a.nan_to_num(), b.nan_to_num()) for a, b in zip(first, again, strict=True))


def test_whole_fraction_mixes_whole_maps_into_cropped_batches(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "t.zarr", toy_arrays(n=32, t=4, size=16), {"cell_size_m": 2.0})
    options = AugmentOptions(crop=8, whole_fraction=0.5)
    sizes = [tuple(b["signals"].shape[-2:]) for epoch in range(3) for b in _batches(path, options, epoch)]
    assert set(sizes) == {(8, 8), (16, 16)}
    only_windows = [tuple(b["signals"].shape[-2:]) for b in _batches(path, AugmentOptions(crop=8))]
    assert set(only_windows) == {(8, 8)}
