"""The datamodule: splits, model-side tx_pos, augmentation that repeats per (seed, epoch), padding collate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tomoformer.data.datamodule import (
    AugmentOptions,
    EpochShuffleSampler,
    ShardedBatchSampler,
    SignalDataModule,
    SignalMapDataset,
    collate,
    make_loader,
    model_tx_pos,
    plan_batches,
    split_indices,
)
from tomoformer.data.format import open_dataset
from tomoformer.data.transforms import augment_from_options
from tomoformer.errors import DataError


def test_split_is_seeded_disjoint_and_complete() -> None:
    train, val = split_indices(20, 0.2, seed=1)
    assert len(val) == 4 and not set(train) & set(val) and sorted([*train, *val]) == list(range(20))
    again = split_indices(20, 0.2, seed=1)
    np.testing.assert_array_equal(again[1], val)
    assert not np.array_equal(split_indices(20, 0.2, seed=2)[1], val)


def test_model_tx_pos_measures_height_above_receiver_in_cells() -> None:
    tx = np.array([[3.0, 4.0, 21.5], [np.nan, np.nan, np.nan]], dtype=np.float32)
    out = model_tx_pos(tx, cell_size_m=2.0, rx_height_m=1.5)
    assert out[0].tolist() == [3.0, 4.0, 10.0] and torch.isnan(out[1]).all()


def test_items_and_augmentation_are_repeatable(toy_dataset: Path) -> None:
    source = open_dataset(toy_dataset)
    augment = augment_from_options(AugmentOptions(d4=True, min_frames=2, max_frames=3, min_keep_fraction=0.5))
    a = SignalMapDataset(source, augment=augment, seed=5)
    b = SignalMapDataset(source, augment=augment, seed=5)
    item = a[3]
    assert item["signals"].shape[1:] == (16, 16) and 2 <= item["signals"].shape[0] <= 3
    torch.testing.assert_close(item["signals"], b[3]["signals"], equal_nan=True)
    a.set_epoch(1)
    assert not torch.equal(torch.nan_to_num(a[3]["signals"]), torch.nan_to_num(item["signals"]))
    plain = SignalMapDataset(source, in_memory=False)[3]
    np.testing.assert_array_equal(plain["buildings"].numpy(), source.read("buildings", 3))


def test_collate_pads_short_frame_subsets_with_missing_frames() -> None:
    items = [
        {"signals": torch.zeros(2, 4, 4), "tx_pos": torch.zeros(2, 3), "buildings": torch.zeros(4, 4)},
        {"signals": torch.ones(3, 4, 4), "tx_pos": torch.ones(3, 3), "buildings": torch.ones(4, 4)},
    ]
    batch = collate(items)
    assert batch["signals"].shape == (2, 3, 4, 4) and torch.isnan(batch["signals"][0, 2]).all()
    assert torch.isnan(batch["tx_pos"][0, 2]).all() and batch["buildings"].shape == (2, 4, 4)


def test_sampler_order_depends_only_on_seed_and_epoch() -> None:
    sampler = EpochShuffleSampler(10, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == list(range(10)) and first != second
    again = EpochShuffleSampler(10, seed=0)
    again.set_epoch(1)
    assert list(again) == second


def test_datamodule_splits_when_no_validation_file(toy_dataset: Path) -> None:
    dm = SignalDataModule(toy_dataset, val_fraction=0.25, batch_size=4)
    dm.setup()
    assert len(dm.train_set) == 12 and len(dm.val_set) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["signals"].shape == (4, 4, 16, 16) and batch["tx_pos"].shape == (4, 4, 3)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_rank_batches_cover_each_sample_once_with_equal_counts(world: int) -> None:
    for n in range(world, 23):
        for batch_size in (1, 2, 3, 5):
            order = np.random.default_rng(n).permutation(n)
            plans = [plan_batches(order, batch_size, rank, world) for rank in range(world)]
            flat = np.concatenate([b for plan in plans for b in plan])
            assert sorted(flat.tolist()) == list(range(n)), (n, batch_size)
            assert len({len(plan) for plan in plans}) == 1, (n, batch_size)
            per_rank = len(plans[0])
            cap = batch_size if per_rank * world * batch_size >= n else -(-n // (world * per_rank))
            assert all(1 <= len(b) <= cap for plan in plans for b in plan), (n, batch_size)
            if world == 1:  # plain chunking, as a DataLoader with this batch size
                assert [b.tolist() for b in plans[0]] == [
                    order[i : i + batch_size].tolist() for i in range(0, n, batch_size)
                ]


def test_more_ranks_than_samples_is_refused() -> None:
    with pytest.raises(DataError, match="3 samples cannot be shared by 4 ranks"):
        plan_batches(np.arange(3), 2, 0, 4)


def test_batch_sampler_sends_the_trainer_epoch_with_each_index(toy_dataset: Path) -> None:
    epoch = {"now": 2}
    sampler = ShardedBatchSampler(16, 4, EpochShuffleSampler(16, 0), epoch_source=lambda: epoch["now"], epoch_keys=True)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 4 and {e for b in batches for e, _ in b} == {2}
    expected = EpochShuffleSampler(16, 0)
    expected.set_epoch(2)
    assert [i for b in batches for _, i in b] == list(expected)
    ds = SignalMapDataset(open_dataset(toy_dataset), augment=augment_from_options(AugmentOptions(d4=True)), seed=0)
    ds.set_epoch(2)
    # A worker's copy of the dataset may be at another epoch: the key's epoch decides the augmentation.
    torch.testing.assert_close(ds[(2, 5)]["signals"], ds[5]["signals"], equal_nan=True)
    assert any(not torch.equal(ds[(e, 5)]["signals"].nan_to_num(), ds[5]["signals"].nan_to_num()) for e in (0, 1, 3))


def test_persistent_workers_follow_the_epoch(toy_dataset: Path) -> None:
    dataset = SignalMapDataset(open_dataset(toy_dataset), augment=augment_from_options(AugmentOptions(d4=True)), seed=0)
    sampler = ShardedBatchSampler(len(dataset), 8, EpochShuffleSampler(len(dataset), 0), epoch_keys=True)
    loader = make_loader(dataset, num_workers=1, batch_sampler=sampler)
    assert loader.persistent_workers

    def epoch(e: int) -> list[torch.Tensor]:
        sampler.sampler.set_epoch(e)  # as Lightning does; the worker's dataset copy is never told
        return [torch.cat([b["index"].float(), b["signals"].nan_to_num().flatten()]) for b in loader]

    first, second, again = epoch(0), epoch(1), epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
