"""DDP on 2 CPU processes (gloo): every rank reads its own shard, each sample exactly once per epoch, and a
resumed run continues with the epoch order an uninterrupted run would have used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import toy_arrays
from tomoformer.data.datamodule import EpochShuffleSampler, plan_batches, split_indices
from tomoformer.data.format import write_dataset

WORKER = Path(__file__).with_name("ddp_worker.py")
N, BATCH, VAL_FRACTION, SEED = 11, 3, 0.3, 0  # as in ddp_worker.py; 11 samples leave uneven shards


def launch(data: Path, out: Path, epochs: int, resume: bool) -> list[dict]:
    """Run ddp_worker.py (which Lightning relaunches as rank 1); return the records the run added."""
    before = {p: len(p.read_text().splitlines()) for p in out.glob("seen-rank*.jsonl")}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, str(WORKER), str(data), str(out), str(epochs), str(int(resume))]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = []
    for path in sorted(out.glob("seen-rank*.jsonl")):
        rank = int(path.stem.removeprefix("seen-rank"))
        lines = path.read_text().splitlines()[before.get(path, 0) :]
        records += [{**json.loads(line), "rank": rank} for line in lines]
    return records


def seen(records: list[dict], stage: str, epoch: int, rank: int | None = None) -> list[list[int]]:
    return [
        r["index"]
        for r in records
        if r["stage"] == stage and r["epoch"] == epoch and (rank is None or r["rank"] == rank)
    ]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_ddp_shards_exactly_once_and_resumes(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "toy.zarr", toy_arrays(n=N, size=8), {"cell_size_m": 2.0})
    out = tmp_path / "run"
    train_idx, val_idx = split_indices(N, VAL_FRACTION, SEED)

    first = launch(data, out, epochs=1, resume=False)
    resumed = launch(data, out, epochs=2, resume=True)
    assert {r["epoch"] for r in first} == {0} and {r["epoch"] for r in resumed} == {1}
    for records, epoch in ((first, 0), (resumed, 1)):
        train = sorted(i for batch in seen(records, "train", epoch) for i in batch)
        assert train == sorted(train_idx.tolist())  # the union over ranks: each sample once, none padded
        val = sorted(i for batch in seen(records, "val", epoch) for i in batch)
        assert val == sorted(val_idx.tolist())
        counts = {len(seen(records, "train", epoch, rank)) for rank in (0, 1)}
        assert len(counts) == 1  # the same number of steps on both ranks, else DDP would hang

    # The resumed epoch uses the order of epoch 1 of an uninterrupted run.
    sampler = EpochShuffleSampler(len(train_idx), SEED)
    sampler.set_epoch(1)
    order = train_idx[np.fromiter(sampler, np.int64)]
    for rank in (0, 1):
        expected = [b.tolist() for b in plan_batches(order, BATCH, rank, 2)]
        assert seen(resumed, "train", 1, rank) == expected
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2 * len(plan_batches(order, BATCH, 0, 2))  # one step per batch and epoch
