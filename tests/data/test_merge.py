"""`data.merge`: concatenation in order, group renumbering, and clear errors on mismatched grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data.test_format import make_arrays
from tomoformer.cli import main
from tomoformer.data.format import open_dataset, write_dataset
from tomoformer.data.merge import merge_datasets
from tomoformer.errors import DataError


def test_merge_concatenates_in_order_and_unites_groups(tmp_path: Path) -> None:
    a_arrays = make_arrays(n=3, seed=1)
    a_arrays["group"] = np.array([1, 0, 1])
    a = write_dataset(tmp_path / "a.zarr", a_arrays, {"cell_size_m": 2.0, "group_names": ["x", "y"]})
    b_arrays = make_arrays(n=2, seed=2)
    b_arrays.pop("group", None)
    b = write_dataset(tmp_path / "munich.npz", b_arrays, {"cell_size_m": 2.0})
    out, names = merge_datasets([a, b], tmp_path / "m.zarr")
    assert names == ["x", "y", "munich"]
    with open_dataset(out) as merged:
        assert merged.shape == (5, 4, 16, 12)
        signals = merged.read("signals", slice(None))
        np.testing.assert_array_equal(signals[:3], a_arrays["signals"])
        np.testing.assert_array_equal(signals[3:], b_arrays["signals"])
        np.testing.assert_array_equal(merged.read("group", slice(None)), [1, 0, 1, 2, 2])
        assert merged.attrs["group_names"] == ["x", "y", "munich"]
        assert merged.attrs["merged_from"] == [str(a), str(b)]


def test_merge_refuses_other_grids_and_cell_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_dataset(tmp_path / "a.zarr", make_arrays(n=2), {"cell_size_m": 2.0})
    b = write_dataset(tmp_path / "b.zarr", make_arrays(n=2, h=8), {"cell_size_m": 2.0})
    c = write_dataset(tmp_path / "c.zarr", make_arrays(n=2), {"cell_size_m": 1.0})
    with pytest.raises(DataError, match=r"b\.zarr: signals have T, H, W"):
        merge_datasets([a, b], tmp_path / "m.zarr")
    with pytest.raises(DataError, match=r"c\.zarr: cell_size_m 1\.0"):
        merge_datasets([a, c], tmp_path / "m.zarr")
    assert not (tmp_path / "m.zarr").exists()
    assert main(["data", "merge", str(a), str(b), "--out", str(tmp_path / "m.zarr")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b.zarr" in err[0]
    assert main(["data", "merge", str(a), str(a), "--out", str(tmp_path / "m.npz")]) == 0
    with open_dataset(tmp_path / "m.npz") as merged:
        assert len(merged) == 4
