"""The dataset contract: round trips in all formats and one clear error for each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tomoformer.data.format import (
    ZarrWriter,
    convert,
    dataset_format,
    info,
    open_dataset,
    validate,
    write_dataset,
)
from tomoformer.errors import DataError

FORMATS = ("zarr", "npz", "h5")


def make_arrays(n: int = 3, t: int = 4, h: int = 16, w: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    signals = rng.normal(-90, 15, (n, t, h, w)).astype(np.float32)
    signals[signals < -120] = np.nan
    return {
        "signals": signals,
        "buildings": (rng.random((n, h, w)) > 0.7).astype(np.uint8),
        "tx_pos": np.concatenate([rng.uniform(-5, 20, (n, t, 2)), rng.uniform(2, 30, (n, t, 1))], -1).astype(
            np.float32
        ),
        "group": np.arange(n, dtype=np.int16) % 5,
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_arrays_and_attrs(tmp_path: Path, fmt: str) -> None:
    arrays = make_arrays()
    path = write_dataset(tmp_path / f"d.{fmt}", arrays, {"cell_size_m": 2.5, "source": "test", "frequency_hz": 2.4e9})
    assert validate(path) == []
    with open_dataset(path) as ds:
        assert ds.shape == (3, 4, 16, 12)
        assert ds.format == dataset_format(path)
        assert ds.cell_size_m == 2.5 and ds.attrs["source"] == "test"
        for key, value in arrays.items():
            np.testing.assert_array_equal(ds.read(key, slice(None)), value)
        np.testing.assert_array_equal(ds.sample(1)["signals"], arrays["signals"][1])
        # Unsorted fancy indices come back in the asked order.
        np.testing.assert_array_equal(ds.read("signals", np.array([2, 0])), arrays["signals"][[2, 0]])


@pytest.mark.parametrize(("src", "dst"), [(a, b) for a in FORMATS for b in FORMATS if a != b])
def test_convert_between_all_formats(tmp_path: Path, src: str, dst: str) -> None:
    arrays = make_arrays()
    first = write_dataset(tmp_path / f"a.{src}", arrays, {"cell_size_m": 2.0})
    second = convert(first, tmp_path / f"b.{dst}")
    back = convert(second, tmp_path / f"c.{src}")
    with open_dataset(back) as ds:
        for key, value in arrays.items():
            np.testing.assert_array_equal(ds.read(key, slice(None)), value)


def test_float16_convert_and_unlabelled_data(tmp_path: Path) -> None:
    arrays = make_arrays()
    del arrays["buildings"]
    path = convert(write_dataset(tmp_path / "a.npz", arrays, {}), tmp_path / "b.zarr", dtype="float16")
    with open_dataset(path) as ds:
        assert ds.signals.dtype == np.float16 and ds.buildings is None
    with pytest.raises(DataError, match="'buildings' is missing"):
        open_dataset(path, require_buildings=True)


def test_info_reports_ranges_and_fractions(tmp_path: Path) -> None:
    arrays = make_arrays()
    summary = info(write_dataset(tmp_path / "a.zarr", arrays, {}))
    finite = arrays["signals"][np.isfinite(arrays["signals"])]
    assert summary["n_samples"] == 3 and summary["frames"] == 4
    assert summary["signals_min_db"] == pytest.approx(finite.min())
    assert summary["signals_max_db"] == pytest.approx(finite.max())
    assert summary["signals_nan_fraction"] == pytest.approx(np.isnan(arrays["signals"]).mean())
    assert summary["building_fraction"] == pytest.approx(arrays["buildings"].mean())


def test_zarr_writer_counts_written_samples_and_resumes(tmp_path: Path) -> None:
    arrays = make_arrays(n=4)
    writer = ZarrWriter(tmp_path / "s.zarr", n_total=4, arrays_like=arrays, attrs={})
    writer.write(0, {k: v[:2] for k, v in arrays.items()})
    problems = validate(tmp_path / "s.zarr")
    assert len(problems) == 1 and "incomplete: 2 of 4" in problems[0]
    again, done = ZarrWriter.reopen(tmp_path / "s.zarr")
    assert done == 2
    again.write(2, {k: v[2:] for k, v in arrays.items()})
    assert validate(tmp_path / "s.zarr") == []


# ------------------------------------------------------------------------------------------ bad input


def _bad(arrays: dict[str, np.ndarray], **changes: np.ndarray | None) -> dict[str, np.ndarray]:
    out = dict(arrays)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


BAD_CASES = {
    "missing signals": (lambda a: _bad(a, signals=None), "'signals' is missing"),
    "N disagrees": (lambda a: _bad(a, buildings=a["buildings"][:2]), "'buildings' has shape"),
    "H disagrees": (lambda a: _bad(a, buildings=a["buildings"][:, :5]), "'buildings' has shape"),
    "T disagrees in tx_pos": (lambda a: _bad(a, tx_pos=a["tx_pos"][:, :2]), "'tx_pos' has shape"),
    "wrong ndim": (lambda a: _bad(a, signals=a["signals"][0]), "'signals' has 3 dimensions, expected 4"),
    "T = 0": (lambda a: _bad(a, signals=a["signals"][:, :0], tx_pos=a["tx_pos"][:, :0]), "empty axis"),
    "buildings not 0/1": (lambda a: _bad(a, buildings=a["buildings"] * 3), "not in {0, 1}"),
    "NaN in buildings": (
        lambda a: _bad(a, buildings=np.where(a["buildings"] > 0, np.nan, 0.0).astype(np.float32)),
        "not in {0, 1}",
    ),
    "integer signals": (
        lambda a: _bad(a, signals=np.nan_to_num(a["signals"]).astype(np.int32)),
        "dtype int32",
    ),
    "inf in signals": (
        lambda a: _bad(a, signals=np.where(np.isnan(a["signals"]), np.inf, a["signals"])),
        "infinite",
    ),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_gives_one_line_naming_file_and_array(tmp_path: Path, fmt: str, case: str) -> None:
    make, expected = BAD_CASES[case]
    arrays = make(make_arrays())
    if "signals" not in arrays:
        arrays["other"] = np.zeros(3)  # a file with something in it, but no signals
    path = write_dataset(tmp_path / f"bad.{fmt}", arrays, {})
    problems = validate(path)
    assert problems, case
    assert any(expected in p for p in problems), problems
    assert all(str(path) in p and "\n" not in p for p in problems)


def test_truncated_npz_and_h5_are_clear_errors(tmp_path: Path) -> None:
    for fmt in ("npz", "h5"):
        path = write_dataset(tmp_path / f"d.{fmt}", make_arrays(), {})
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(DataError, match=str(path)) as err, open_dataset(path) as ds:
            ds.read("signals", slice(None))
        assert "\n" not in str(err.value)
        assert validate(path) and str(path) in validate(path)[0]


def test_corrupt_zarr_chunk_is_a_clear_error(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "d.zarr", make_arrays(), {})
    chunks = sorted(p for p in (path / "signals").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunks[0].write_bytes(b"\x00garbage" * 4)
    problems = validate(path)
    assert any("'signals'" in p and "cannot read" in p for p in problems), problems
    with open_dataset(path) as ds, pytest.raises(DataError, match="array 'signals', index 0"):
        ds.sample(0)


def test_missing_file_unknown_suffix_and_bad_attrs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        open_dataset(tmp_path / "nope.zarr")
    with pytest.raises(DataError, match="unknown dataset format"):
        open_dataset(tmp_path / "data.csv")
    path = write_dataset(tmp_path / "d.npz", make_arrays(), {"signal_unit": "watts"})
    assert "signal_unit" in validate(path)[0]
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{not json")
    assert "not a readable Zarr store" in validate(tmp_path / "junk.zarr")[0]
    (tmp_path / "other.zarr").mkdir()
    (tmp_path / "other.zarr" / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    assert "'signals' is missing" in validate(tmp_path / "other.zarr")[0]
