"""Held-out discipline on a toy corpus laid out like ``benchmarks/realcity_corpus.py``'s: the real-city benchmark's
training and validation stores never contain a test tile, and a split that would (a test tile copied, rotated, into
a training store; a store of a held-out city) is refused with one line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tomoformer.data.format import open_dataset, write_dataset
from tomoformer.data.heldout import check_held_out, tile_keys
from tomoformer.errors import DataError

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "realcity.py"
spec = importlib.util.spec_from_file_location("bench_realcity", SCRIPT)
assert spec is not None and spec.loader is not None
realcity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(realcity)


def _store(path: Path, seed: int, n: int = 4, size: int = 12, heights: np.ndarray | None = None, **attrs) -> Path:
    rng = np.random.default_rng(seed)
    if heights is None:
        heights = (rng.random((n, size, size)) < 0.3) * rng.uniform(3, 30, (n, size, size))
    n = len(heights)
    arrays = {
        "signals": rng.normal(-90, 10, (n, 2, size, size)).astype(np.float32),
        "buildings": (heights > 1.5).astype(np.uint8),
        "heights": heights.astype(np.float32),
        "tx_pos": np.concatenate([rng.uniform(0, size, (n, 2, 2)), rng.uniform(2, 30, (n, 2, 1))], -1).astype(
            np.float32
        ),
    }
    return write_dataset(path, arrays, {"cell_size_m": 2.0, **attrs})


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "rt_corpus"
    _store(root / "train_munich.zarr", 1, scene="munich")
    _store(root / "train_town.zarr", 2, group_names=["town"])
    _store(root / "val_bubenec.zarr", 3)
    _store(root / "test_florence.zarr", 4, scene="florence")
    return root


def _footprints(path: Path) -> set[bytes]:
    source = open_dataset(path)
    try:
        return {np.asarray(h).tobytes() for h in source.read("heights", slice(None))}
    finally:
        source.close()


def test_benchmark_splits_hold_no_test_tile(corpus: Path) -> None:
    train, val, test = realcity.corpus_splits(corpus)
    assert [p.name for p in train] == ["train_munich.zarr", "train_town.zarr"] and test.name == "test_florence.zarr"
    test_tiles = _footprints(test)
    assert all(not (_footprints(p) & test_tiles) for p in [*train, val])
    assert len(tile_keys(test)) == 4


def test_a_test_tile_in_training_is_refused_even_rotated(corpus: Path) -> None:
    source = open_dataset(corpus / "test_florence.zarr")
    tile = np.asarray(source.read("heights", 2))
    source.close()
    leaked = np.stack([np.zeros_like(tile), np.rot90(tile)[:, ::-1]])  # an empty tile and a mirrored test tile
    _store(corpus / "train_leak.zarr", 5, heights=leaked)
    with pytest.raises(DataError, match=r"train_leak.zarr: sample 1 has the footprint of test tile 2 of") as err:
        realcity.corpus_splits(corpus)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "attrs"),
    [
        ("train_florence.zarr", {}),
        ("train_city.zarr", {"group_names": ["munich", "san_francisco"]}),
        ("train_merged.zarr", {"merged_from": ["rt/test_florence.zarr"]}),
    ],
)
def test_a_store_naming_a_held_out_city_is_refused(corpus: Path, name: str, attrs: dict) -> None:
    _store(corpus / name, 6, **attrs)
    with pytest.raises(DataError, match="names the held-out city"):
        realcity.corpus_splits(corpus)


def test_the_test_store_itself_may_not_validate(corpus: Path) -> None:
    test = corpus / "test_florence.zarr"
    with pytest.raises(DataError, match="a test store is used for validation"):
        check_held_out([corpus / "train_town.zarr"], [test], [test])
