"""`simulate --shard I/N`: shards hold the block [I*n//N, (I+1)*n//N) and `data merge` of all N in order equals the
single-process store, array for array and attribute for attribute; a killed shard resumes; bad sets of shards
are refused with one line."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.sim.test_geometry_source import geometry_store
from tomoformer.cli import main
from tomoformer.data.format import ZarrWriter, open_dataset, validate
from tomoformer.data.merge import merge_datasets
from tomoformer.data.shards import Shard, parse_shard, run_attrs, shard_name
from tomoformer.errors import ConfigError, DataError

SMALL = ["--frames", "3", "--size", "16", "--chunk", "2", "--no-progress", "--style", "mixed"]


def read_all(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with open_dataset(path) as ds:
        return {key: ds.read(key, slice(None)) for key in ds.arrays}, dict(ds.attrs)


def assert_same_store(a: Path, b: Path) -> None:
    """Equal arrays (values, dtypes, shapes; NaN where NaN) and equal run attributes (each store's ownership stamp
    names its own folder, so it differs by design)."""
    arrays_a, attrs_a = read_all(a)
    arrays_b, attrs_b = read_all(b)
    assert sorted(arrays_a) == sorted(arrays_b)
    for key, value in arrays_a.items():
        assert value.dtype == arrays_b[key].dtype, key
        np.testing.assert_array_equal(value, arrays_b[key], err_msg=key)
    assert run_attrs(attrs_a) == run_attrs(attrs_b)


def simulate_shards(tmp_path: Path, args: list[str], count: int, stem: str = "part") -> list[Path]:
    paths = [tmp_path / f"{stem}-{i}.zarr" for i in range(count)]
    for i, path in enumerate(paths):
        assert main(["simulate", *args, "--shard", f"{i}/{count}", "--out", str(path)]) == 0
    return paths


def test_shard_bounds_cover_every_sample_once() -> None:
    for n in (1, 5, 7, 100):
        for count in range(1, min(n, 9) + 1):
            blocks = [Shard(i, count).bounds(n) for i in range(count)]
            assert blocks[0][0] == 0 and blocks[-1][1] == n
            assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(blocks))
    assert parse_shard(" 2 / 8 ") == Shard(2, 8)
    for bad in ("3", "8/8", "-1/4", "a/b", "1/0"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(ConfigError, match="empty"):
        Shard(0, 4).bounds(3)
    assert shard_name(3, 12) == "part-0003" and sorted(shard_name(i, 12) for i in range(12))[10] == "part-0010"


def test_merged_shards_equal_the_single_process_store(tmp_path: Path) -> None:
    args = [*SMALL, "--n", "7", "--seed", "5", "--measured-fraction", "0.5"]
    full = tmp_path / "full.zarr"
    assert main(["simulate", *args, "--out", str(full)]) == 0
    parts = simulate_shards(tmp_path, args, 3)
    with open_dataset(parts[1]) as shard:
        assert len(shard) == 2 and shard.attrs["shard"] == {"index": 1, "count": 3, "start": 2, "stop": 4, "n": 7}
    merged = tmp_path / "merged.zarr"
    assert main(["data", "merge", *map(str, parts), "--out", str(merged)]) == 0
    assert validate(merged) == []
    assert_same_store(full, merged)
    # One shard of one is the whole dataset; `data merge` takes it alone.
    (whole,) = simulate_shards(tmp_path, args, 1, stem="whole")
    assert main(["data", "merge", str(whole), "--out", str(tmp_path / "whole.zarr")]) == 0
    assert_same_store(full, tmp_path / "whole.zarr")
    # Any other format of the merge holds the same arrays.
    merge_datasets(parts, tmp_path / "merged.npz")
    arrays, _ = read_all(tmp_path / "merged.npz")
    for key, value in read_all(full)[0].items():
        np.testing.assert_array_equal(arrays[key], value)


def test_shards_on_given_geometry_merge_to_the_single_process_store(tmp_path: Path) -> None:
    geo = geometry_store(tmp_path / "geo.zarr", n=3)
    args = ["--geometry", str(geo), "--frames", "3", "--chunk", "2", "--no-progress", "--n", "5", "--seed", "2"]
    full = tmp_path / "full.zarr"
    assert main(["simulate", *args, "--out", str(full)]) == 0
    parts = simulate_shards(tmp_path, args, 2)
    merged, _ = merge_datasets(parts, tmp_path / "merged.zarr")
    assert_same_store(full, merged)


def test_sionna_shards_merge_to_the_single_process_store(tmp_path: Path) -> None:
    pytest.importorskip("sionna.rt")
    from tomoformer.sim.sionna import find_llvm

    if not (os.environ.get("DRJIT_LIBLLVM_PATH") or find_llvm()):
        pytest.skip("no LLVM >= 19 for Dr.Jit's CPU backend")
    args = ["--engine", "sionna", "--frames", "2", "--size", "12", "--samples-per-tx", "20000", "--no-progress"]
    args += ["--n", "3", "--seed", "1"]
    full = tmp_path / "full.zarr"
    assert main(["simulate", *args, "--out", str(full)]) == 0
    parts = simulate_shards(tmp_path, args, 2)
    merged, _ = merge_datasets(parts, tmp_path / "merged.zarr")
    assert_same_store(full, merged)


def test_a_killed_shard_resumes_to_the_same_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = [*SMALL, "--n", "9", "--seed", "3"]
    straight = tmp_path / "straight.zarr"
    assert main(["simulate", *args, "--shard", "1/2", "--out", str(straight)]) == 0  # samples 4..8
    original = ZarrWriter.write

    def killed_after_first_block(self: ZarrWriter, start: int, block: dict[str, np.ndarray]) -> None:
        if start >= 2:
            raise KeyboardInterrupt
        original(self, start, block)

    out = tmp_path / "killed.zarr"
    monkeypatch.setattr(ZarrWriter, "write", killed_after_first_block)
    assert main(["simulate", *args, "--shard", "1/2", "--out", str(out)]) == 130
    assert not out.exists() and "incomplete: 2 of 5" in validate(tmp_path / ".killed.partial.zarr")[0]
    monkeypatch.setattr(ZarrWriter, "write", original)
    # Resuming as another shard (or without --shard) is refused: the store is of shard 1/2.
    assert main(["simulate", *args, "--shard", "0/2", "--out", str(out), "--resume"]) == 2
    assert main(["simulate", *args, "--out", str(out), "--resume"]) == 2
    assert main(["simulate", *args, "--shard", "1/2", "--out", str(out), "--resume"]) == 0
    assert_same_store(straight, out)


def test_incomplete_unordered_or_foreign_shards_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = [*SMALL, "--n", "6", "--seed", "1"]
    parts = simulate_shards(tmp_path, args, 3)
    other_seed = simulate_shards(tmp_path, [*SMALL, "--n", "6", "--seed", "2"], 3, stem="seed2")
    halves = simulate_shards(tmp_path, args, 2, stem="half")
    cases = {
        "expected shard 0/3": [parts[1], parts[0], parts[2]],
        "3 shard stores were given|merge all 3": [parts[0], parts[1]],
        "attribute 'seed' differs": [parts[0], other_seed[1], parts[2]],
        "another split": [parts[0], halves[1], parts[2]],
    }
    for message, sources in cases.items():
        with pytest.raises(DataError, match=message):
            merge_datasets(sources, tmp_path / "m.zarr")
    assert not (tmp_path / "m.zarr").exists()
    capsys.readouterr()
    assert main(["data", "merge", str(parts[0]), str(parts[2]), str(parts[1]), "--out", str(tmp_path / "m.zarr")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "part-2.zarr: is shard 2/3, expected shard 1/3" in err[0]
    # --shard with more shards than samples, or --shards without --ray: one line, exit 2.
    assert main(["simulate", *SMALL, "--n", "2", "--shard", "0/3", "--out", str(tmp_path / "x.zarr")]) == 2
    assert main(["simulate", *SMALL, "--n", "2", "--shards", "2", "--out", str(tmp_path / "x.zarr")]) == 2
    assert not (tmp_path / "x.zarr").exists()
