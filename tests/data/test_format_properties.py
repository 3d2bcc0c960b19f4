"""Properties of the dataset contract: every bad input gives problems (never a crash), every valid one gives none."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomoformer.data.format import ZarrWriter, convert, info, open_dataset, validate, write_dataset
from tomoformer.errors import DataError

FORMATS = ("zarr", "npz", "h5")
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@st.composite
def valid_arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """A small valid dataset: any N, T, H, W >= 1 (H or W may be 1), NaN holes, optional labels."""
    n, t, h, w = (draw(st.integers(1, 3)) for _ in range(4))
    h, w = draw(st.sampled_from([(h, w), (1, w), (h, 1), (1, 1)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    dtype = draw(st.sampled_from([np.float16, np.float32]))
    # Anywhere in the plausible dB range, with NaN holes; at least one measured cell (an all-NaN set is invalid).
    signals = rng.uniform(-299, 99, (n, t, h, w)).astype(dtype)
    signals[rng.random(signals.shape) < draw(st.sampled_from([0.0, 0.3, 0.95]))] = np.nan
    signals.flat[rng.integers(signals.size)] = rng.uniform(-299, 99)
    arrays = {"signals": signals}
    if draw(st.booleans()):
        arrays["buildings"] = (rng.random((n, h, w)) > 0.5).astype(draw(st.sampled_from([np.uint8, np.float32])))
    if draw(st.booleans()):
        # Rows and columns up to 10 grid sizes outside the grid, heights 0..10 km (the plausible ranges).
        size = max(h, w)
        rows = rng.uniform(-10 * size, h + 10 * size, (n, t, 1))
        cols = rng.uniform(-10 * size, w + 10 * size, (n, t, 1))
        tx = np.concatenate([rows, cols, rng.uniform(0, 10_000, (n, t, 1))], -1).astype(np.float32)
        tx[rng.random((n, t)) < 0.3] = np.nan
        arrays["tx_pos"] = tx
    if draw(st.booleans()):
        arrays["group"] = rng.integers(0, 5, n).astype(np.int16)
    if draw(st.booleans()):
        arrays["heights"] = rng.uniform(0, 30, (n, h, w)).astype(np.float32)
    return arrays


def _break(arrays: dict[str, np.ndarray], how: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``arrays`` with one defect of kind ``how``; each makes the dataset invalid."""
    a = dict(arrays)
    s = a["signals"]
    n, t, h, w = s.shape
    if how == "signals_ndim":
        a["signals"] = s.reshape(n * t, h, w) if rng.random() < 0.5 else s[..., None]
    elif how == "signals_int":
        a["signals"] = np.nan_to_num(s).astype(np.int32)
    elif how == "signals_complex":
        a["signals"] = s.astype(np.complex64)
    elif how == "signals_inf":
        s = s.astype(np.float32)
        s.flat[rng.integers(s.size)] = rng.choice([np.inf, -np.inf])
        a["signals"] = s
    elif how == "signals_huge":
        s = s.astype(np.float32)
        s.flat[rng.integers(s.size)] = rng.choice([1e4, -3e8, 1e38])
        a["signals"] = s
    elif how == "empty_t":
        a["signals"] = s[:, :0]
    elif how == "empty_n":
        a = {k: v[:0] for k, v in a.items()}
    elif how == "buildings_nan":
        b = rng.integers(0, 2, (n, h, w)).astype(np.float32)
        b.flat[rng.integers(b.size)] = np.nan
        a["buildings"] = b
    elif how == "buildings_value":
        b = rng.integers(0, 2, (n, h, w)).astype(np.uint8)
        b.flat[rng.integers(b.size)] = rng.integers(2, 256)
        a["buildings"] = b
    elif how == "buildings_shape":
        a["buildings"] = np.zeros((n, h + 1, w), np.uint8)
    elif how == "tx_shape":
        a["tx_pos"] = np.zeros((n, t, 2), np.float32)
    elif how == "tx_inf":
        a["tx_pos"] = np.full((n, t, 3), np.inf, np.float32)
    elif how == "group_shape":
        a["group"] = np.zeros((n + 1,), np.int16)
    elif how == "group_float":
        a["group"] = np.zeros((n,), np.float32)
    elif how == "signals_implausible":
        s = s.astype(np.float32)
        s.flat[rng.integers(s.size)] = rng.choice([100.5, 150.0, -300.5, -900.0])
        a["signals"] = s
    elif how == "signals_all_nan":
        a["signals"] = np.full_like(s, np.nan)
    elif how == "tx_far":
        tx = np.zeros((n, t, 3), np.float32)
        tx[rng.integers(n), rng.integers(t), rng.integers(2)] = rng.choice([-1, 1]) * (11 * max(h, w) + 2)
        a["tx_pos"] = tx
    elif how == "tx_height":
        tx = np.zeros((n, t, 3), np.float32)
        tx[rng.integers(n), rng.integers(t), 2] = rng.choice([-1.0, 1e4 + 1, 1e30])
        a["tx_pos"] = tx
    elif how == "group_negative":
        a["group"] = -rng.integers(1, 5, n).astype(np.int16)
    elif how == "no_signals":
        del a["signals"]
        a["buildings"] = np.zeros((n, h, w), np.uint8)
    return a


DEFECTS = [
    "signals_ndim",
    "signals_int",
    "signals_complex",
    "signals_inf",
    "signals_huge",
    "empty_t",
    "empty_n",
    "buildings_nan",
    "buildings_value",
    "buildings_shape",
    "tx_shape",
    "tx_inf",
    "group_shape",
    "group_float",
    "no_signals",
    "signals_implausible",
    "signals_all_nan",
    "tx_far",
    "tx_height",
    "group_negative",
]


def write_raw(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Path:
    """Write exactly these arrays and attrs, with no checks (as another tool might)."""
    if path.suffix == ".npz":
        np.savez(path, **arrays, attrs=np.array(json.dumps(attrs)))
    elif path.suffix == ".h5":
        with h5py.File(path, "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=value)
            for key, value in attrs.items():
                f.attrs[key] = value
    else:
        import zarr

        group = zarr.open_group(str(path), mode="w", zarr_format=3)
        for key, value in arrays.items():
            chunks = tuple(max(1, d) for d in value.shape)
            group.create_array(key, shape=value.shape, chunks=chunks, dtype=value.dtype, fill_value=0)
            if value.size:
                group[key][...] = value
        group.attrs.update(attrs)
    return path


def corrupt(path: Path, rng: np.random.Generator, mode: str) -> Path:
    """Truncate or overwrite bytes of ``path`` (a file) or of one file inside a Zarr store; returns the file hit."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    target = files[rng.integers(len(files))]
    data = bytearray(target.read_bytes())
    if mode == "truncate":
        data = data[: rng.integers(0, max(1, len(data)))]
    else:
        for _ in range(rng.integers(1, 8)):
            if data:
                data[rng.integers(len(data))] = rng.integers(256)
    target.write_bytes(bytes(data))
    return target


def read_everything(path: Path) -> None:
    """What the data commands do with a dataset: summary, every array, conversion."""
    info(path)
    with open_dataset(path) as ds:
        for key in ds.arrays:
            ds.read(key, slice(None))


def in_tmp(test: Callable[[Path], None]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        test(Path(tmp))


@PROPERTY
@given(valid_arrays(), st.sampled_from(FORMATS))
def test_valid_data_has_no_problems_and_round_trips(arrays: dict[str, np.ndarray], fmt: str) -> None:
    def check(tmp: Path) -> None:
        path = write_dataset(tmp / f"d.{fmt}", arrays, {"cell_size_m": 1.5})
        assert validate(path) == []
        read_everything(path)
        back = convert(path, tmp / "back.npz")
        with open_dataset(back) as ds:
            for key, value in arrays.items():
                np.testing.assert_array_equal(ds.read(key, slice(None)), value)

    in_tmp(check)


@PROPERTY
@given(valid_arrays(), st.sampled_from(DEFECTS), st.sampled_from(FORMATS), st.integers(0, 2**16))
def test_every_defect_is_reported(arrays: dict[str, np.ndarray], how: str, fmt: str, seed: int) -> None:
    def check(tmp: Path) -> None:
        bad = _break(arrays, how, np.random.default_rng(seed))
        path = write_raw(tmp / f"d.{fmt}", bad, {})
        problems = validate(path)
        assert problems and all(str(path) in p for p in problems), (how, problems)

    in_tmp(check)


@PROPERTY
@given(valid_arrays(), st.sampled_from(FORMATS), st.sets(st.sampled_from(["signals", "buildings", "tx_pos", "group"])))
def test_missing_keys(arrays: dict[str, np.ndarray], fmt: str, drop: set[str]) -> None:
    def check(tmp: Path) -> None:
        kept = {k: v for k, v in arrays.items() if k not in drop}
        path = write_raw(tmp / f"d.{fmt}", kept, {})
        problems = validate(path)
        assert bool(problems) == ("signals" in drop), problems

    in_tmp(check)


ATTR_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(), st.text(max_size=5), st.lists(st.integers())
)


@PROPERTY
@given(
    valid_arrays(),
    st.sampled_from(FORMATS),
    st.dictionaries(st.sampled_from(["signal_unit", "cell_size_m", "n_total", "n_written", "source"]), ATTR_VALUES),
)
def test_odd_attributes_never_crash(arrays: dict[str, np.ndarray], fmt: str, attrs: dict[str, Any]) -> None:
    def check(tmp: Path) -> None:
        if fmt == "h5":
            attrs_h5 = {k: np.array(v) if isinstance(v, list) else v for k, v in attrs.items() if v is not None}
            path = write_raw(tmp / "d.h5", arrays, attrs_h5)
        else:
            path = write_raw(tmp / f"d.{fmt}", arrays, {k: v for k, v in attrs.items() if v == v})
        problems = validate(path)
        if not problems:
            read_everything(path)

    in_tmp(check)


@PROPERTY
@given(valid_arrays(), st.sampled_from(FORMATS), st.integers(0, 2**16), st.sampled_from(["truncate", "overwrite"]))
def test_corrupt_files_give_problems_not_crashes(arrays: dict[str, np.ndarray], fmt: str, seed: int, mode: str) -> None:
    def check(tmp: Path) -> None:
        path = write_dataset(tmp / f"d.{fmt}", arrays, {"source": "fuzz"})
        corrupt(path, np.random.default_rng(seed), mode)
        problems = validate(path)
        assert isinstance(problems, list)
        if not problems:
            read_everything(path)  # a dataset that validates must be fully readable
        else:
            assert all(len(p.splitlines()) == 1 for p in problems)

    in_tmp(check)


@PROPERTY
@given(valid_arrays(), st.integers(0, 2))
def test_interrupted_zarr_writer_is_incomplete(arrays: dict[str, np.ndarray], written: int) -> None:
    def check(tmp: Path) -> None:
        n = len(arrays["signals"])
        path = tmp / "d.zarr"
        writer = ZarrWriter(path, n_total=n + 1, arrays_like=arrays, attrs={})
        writer.write(0, {k: v[: min(written, n)] for k, v in arrays.items()})
        problems = validate(path)
        assert len(problems) == 1 and "incomplete" in problems[0]
        try:
            open_dataset(path)
        except DataError as err:
            assert "incomplete" in str(err)
        else:
            raise AssertionError("an incomplete store opened")

    in_tmp(check)


def _foreign(path: Path, kind: str) -> None:
    """Files other tools might write: groups under array names, attrs that are lists or arrays."""
    signals = np.zeros((1, 2, 3, 3), np.float32)
    if kind == "h5_group":
        with h5py.File(path.with_suffix(".h5"), "w") as f:
            f.create_group("signals")
    elif kind == "h5_array_attr":
        with h5py.File(path.with_suffix(".h5"), "w") as f:
            f["signals"] = signals
            f.attrs["source"] = np.arange(3)
    elif kind == "zarr_group":
        import zarr

        zarr.open_group(str(path.with_suffix(".zarr")), mode="w", zarr_format=3).create_group("signals")
    elif kind == "npz_list_attrs":
        np.savez(path.with_suffix(".npz"), signals=signals, attrs=np.array(json.dumps([1, 2])))


@settings(deadline=None, max_examples=8)
@given(st.sampled_from(["h5_group", "h5_array_attr", "zarr_group", "npz_list_attrs"]))
def test_foreign_layouts_give_problems_not_crashes(kind: str) -> None:
    def check(tmp: Path) -> None:
        _foreign(tmp / "d", kind)
        (path,) = tmp.iterdir()
        problems = validate(path)
        assert bool(problems) == (kind != "h5_array_attr"), problems
        if not problems:
            read_everything(path)

    in_tmp(check)
