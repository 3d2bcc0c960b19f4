"""Dataset fingerprints (tomoformer.data.identity): the same data by any path is the same; other data is not."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import toy_arrays
from tomoformer.data.format import write_dataset
from tomoformer.data.identity import content_fingerprint, data_identity, dataset_fingerprint


def digest(path: str | os.PathLike[str]) -> str:
    return dataset_fingerprint(path)["sha256"]


def test_the_same_store_by_any_spelling_has_one_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = write_dataset(tmp_path / "d.zarr", toy_arrays(n=4), {"cell_size_m": 2.0})
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.zarr").symlink_to(store, target_is_directory=True)
    monkeypatch.chdir(tmp_path / "sub")
    spellings = [store, "../d.zarr", str(tmp_path / "sub" / ".." / "d.zarr"), "../link.zarr"]
    prints = [dataset_fingerprint(p) for p in spellings]
    assert all(p == prints[0] for p in prints)
    assert prints[0]["path"] == str(store.resolve()) and prints[0]["samples"] == 4
    # A copy holds the same data (its ownership stamp differs, and is not part of the identity).
    shutil.copytree(store, tmp_path / "copy.zarr")
    assert digest(tmp_path / "copy.zarr") == prints[0]["sha256"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(1, 1000), n=st.integers(2, 5), which=st.sampled_from(["first", "last", "attrs", "count"]))
def test_other_data_has_another_fingerprint(
    tmp_path_factory: pytest.TempPathFactory, seed: int, n: int, which: str
) -> None:
    folder = tmp_path_factory.mktemp("id")
    arrays = toy_arrays(n=n)
    base = write_dataset(folder / "a.npz", arrays, {"cell_size_m": 2.0})
    other = {key: value.copy() for key, value in arrays.items()}
    attrs = {"cell_size_m": 2.0}
    if which == "first":
        other["signals"][0] = toy_arrays(n=1, seed=seed)["signals"][0]
    elif which == "last":
        other["signals"][-1] += 1.0
    elif which == "attrs":
        attrs["cell_size_m"] = 2.0 + seed
    else:
        other = toy_arrays(n=n + 1)
    changed = write_dataset(folder / "b.npz", other, attrs)
    assert digest(base) != digest(changed)


def test_inputs_that_are_not_datasets_are_fingerprinted_by_content(tmp_path: Path) -> None:
    images = tmp_path / "images.npz"
    images.write_bytes(b"not a signal dataset")
    first = data_identity(str(images))["data"]
    assert first == content_fingerprint(images)
    images.write_bytes(b"other bytes")
    assert data_identity(str(images))["data"] != first
    assert data_identity("sim") == {"data": None, "val_data": None}
    assert data_identity(str(tmp_path / "missing.zarr"))["data"]["missing"] is True
