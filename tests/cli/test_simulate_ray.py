"""`simulate --ray`: shards as Ray tasks on a local 2-CPU cluster, merged into the single-process store; a worker
killed mid-shard is retried and resumes; Ray missing is a one-line error naming the extra."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.data.test_shards import assert_same_store
from tests.sim.test_geometry_source import geometry_store
from tomoformer.cli import main
from tomoformer.data.format import ZarrWriter, validate
from tomoformer.data.ray_runner import _shard_folder, simulate_with_ray
from tomoformer.data.simulated import simulate_dataset
from tomoformer.geometry.source import GeometrySource
from tomoformer.sim.config import SimConfig

ray = pytest.importorskip("ray")

SMALL = ["--frames", "3", "--size", "16", "--chunk", "2", "--no-progress", "--style", "mixed"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One small local cluster for the module; the tasks import this checkout like the tests do."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # The crashing geometry below is defined here: the workers get it by value, not by importing tests.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_store_equals_the_single_process_store(cluster: None, tmp_path: Path) -> None:
    args = [*SMALL, "--n", "7", "--seed", "4", "--measured-fraction", "0.5"]
    full = tmp_path / "full.zarr"
    assert main(["simulate", *args, "--out", str(full)]) == 0
    out = tmp_path / "ray.zarr"
    assert main(["simulate", *args, "--out", str(out), "--ray", "--shards", "3"]) == 0
    assert validate(out) == []
    assert_same_store(full, out)
    assert not (tmp_path / ".ray.zarr.shards").exists()  # our temporary shards are gone
    # The output policy holds: an existing store needs --overwrite; the default is one shard per CPU.
    assert main(["simulate", *args, "--out", str(out), "--ray"]) == 2
    assert main(["simulate", *args, "--out", str(out), "--ray", "--overwrite"]) == 0
    assert_same_store(full, out)


class CrashOnce:
    """A geometry whose first read of tile ``at`` kills the worker process (as an out-of-memory kill would)."""

    def __init__(self, path: str, at: int, flag: str) -> None:
        self.source, self.at, self.flag = GeometrySource(path), at, Path(flag)

    def __len__(self) -> int:
        return len(self.source)

    def heights(self, index: int) -> np.ndarray:
        if index == self.at and not self.flag.exists():
            self.flag.touch()
            os._exit(1)
        return self.source.heights(index)

    def group(self, index: int) -> int:
        return self.source.group(index)

    def dataset_attrs(self) -> dict:
        return self.source.dataset_attrs()


def test_a_killed_worker_is_retried_and_its_shard_resumes(cluster: None, tmp_path: Path) -> None:
    geo = geometry_store(tmp_path / "geo.zarr", n=3)
    config = SimConfig(frames=3, size=16)
    simulate_args = {"config": config, "seed": 2, "device": "cpu", "chunk": 1, "ray_options": None, "scene": None}
    full = simulate_dataset(tmp_path / "full.zarr", 6, geometry=GeometrySource(geo), progress=False, **simulate_args)
    one = tmp_path / "one.zarr"  # a single shard: the store as one process writes it
    simulate_with_ray(one, 6, simulate_args, shards=1, progress=False, geometry=functools.partial(GeometrySource, geo))
    assert_same_store(full, one)
    flag = tmp_path / "crashed"
    out = tmp_path / "retried.zarr"
    crash = functools.partial(CrashOnce, str(geo), 4, str(flag))  # sample 4: shard 1 of 2 after one sample
    simulate_with_ray(out, 6, simulate_args, shards=2, max_retries=2, progress=True, geometry=crash)
    assert flag.exists()  # the worker did die once
    assert_same_store(full, out)


def test_missing_ray_and_a_foreign_shard_folder_are_one_line_errors(
    cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.zarr"
    foreign = tmp_path / ".x.zarr.shards"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["simulate", *SMALL, "--n", "4", "--out", str(out), "--ray", "--shards", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a shard folder tomoformer wrote" in err[0], err
    assert (foreign / "notes.txt").read_text() == "mine" and not out.exists()
    assert main(["simulate", *SMALL, "--n", "4", "--out", str(out), "--ray", "--shard", "0/2"]) == 2
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    assert main(["simulate", *SMALL, "--n", "4", "--out", str(out), "--ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install -e ".[scale]"' in err[0], err


def test_a_rerun_with_resume_keeps_complete_shards_and_resumes_partial_ones(
    cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*SMALL, "--n", "6", "--seed", "8"]
    full = tmp_path / "full.zarr"
    assert main(["simulate", *args, "--out", str(full)]) == 0
    out = tmp_path / "out.zarr"
    # What a killed driver leaves: our shard folder, shard 0 complete, shard 1 with one block of its three samples.
    work = _shard_folder(out, 6, 2, resume=False)
    assert main(["simulate", *args, "--shard", "0/2", "--out", str(work / "part-0000.zarr")]) == 0
    original = ZarrWriter.write

    def killed(self: ZarrWriter, start: int, block: dict[str, np.ndarray]) -> None:
        if start >= 2:
            raise KeyboardInterrupt
        original(self, start, block)

    monkeypatch.setattr(ZarrWriter, "write", killed)
    assert main(["simulate", *args, "--shard", "1/2", "--out", str(work / "part-0001.zarr")]) == 130
    monkeypatch.setattr(ZarrWriter, "write", original)
    done_before = (work / "part-0000.zarr" / "zarr.json").stat().st_mtime_ns
    assert main(["simulate", *args, "--out", str(out), "--ray", "--shards", "3", "--resume"]) == 2  # other split
    assert (work / "part-0000.zarr" / "zarr.json").stat().st_mtime_ns == done_before
    assert main(["simulate", *args, "--out", str(out), "--ray", "--shards", "2", "--resume"]) == 0
    assert_same_store(full, out)
    assert not work.exists()
    capsys.readouterr()
    assert main(["simulate", *args, "--out", str(out), "--ray", "--resume"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert main(["simulate", *SMALL, "--n", "6", "--seed", "9", "--out", str(out), "--ray", "--resume"]) == 2
