"""The dataset format: one contract for Zarr v3 stores, ``.npz`` and ``.h5``/``.hdf5`` files.

Arrays (N samples, each one area seen by T maps of H x W cells):

- ``signals``   float16/float32 ``[N, T, H, W]`` dB (path gain or dBm, see ``signal_unit``); NaN = not measured.
- ``buildings`` uint8 ``[N, H, W]``, 1 = building at receiver height. Optional (unlabelled data).
- ``tx_pos``    float32 ``[N, T, 3]``: transmitter row, column (cells, row 0 = north) and height (m). Optional.
- ``group``     int ``[N]``, e.g. the city style. Optional.
- ``heights``   float32 ``[N, H, W]`` building heights in metres (simulated data). Optional.

Attributes: ``cell_size_m``, ``frequency_hz``, ``signal_unit``, ``rx_height_m``, ``source`` and free extras.
A Zarr store written by :class:`ZarrWriter` also records ``n_total``/``n_written`` so that an interrupted
simulation can be resumed and is never mistaken for a complete one.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.errors import DataError
from tomoformer.io import atomic_path

ARRAY_KEYS = ("signals", "buildings", "tx_pos", "group", "heights")
# Arrays that `tomoformer predict` writes; stores may hold them beside (or instead of) the dataset arrays.
PREDICTION_KEYS = ("probabilities",)
SIGNAL_UNITS = ("path_gain_db", "dbm", "db")
DEFAULT_ATTRS: dict[str, Any] = {
    "cell_size_m": 2.0,
    "frequency_hz": 3.5e9,
    "signal_unit": "path_gain_db",
    "rx_height_m": 1.5,
    "source": "unknown",
}
_EXPECTED_NDIM = {"signals": 4, "buildings": 3, "tx_pos": 3, "group": 1, "heights": 3}


def dataset_format(path: str | os.PathLike[str]) -> str:
    """The format of ``path`` from its suffix: ``zarr``, ``npz`` or ``h5``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".zarr":
        return "zarr"
    if suffix == ".npz":
        return "npz"
    if suffix in (".h5", ".hdf5"):
        return "h5"
    raise DataError(f"{path}: unknown dataset format {suffix!r}; use .zarr, .npz, .h5 or .hdf5")


@dataclass
class SignalDataset:
    """A read-only view of a dataset. Arrays stay lazy (Zarr/HDF5) where the format allows."""

    path: Path
    format: str
    arrays: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    _handle: Any = None

    @property
    def signals(self) -> Any:
        return self.arrays["signals"]

    @property
    def buildings(self) -> Any | None:
        return self.arrays.get("buildings")

    @property
    def tx_pos(self) -> Any | None:
        return self.arrays.get("tx_pos")

    @property
    def group(self) -> Any | None:
        return self.arrays.get("group")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, T, H, W)``."""
        n, t, h, w = self.signals.shape
        return int(n), int(t), int(h), int(w)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def cell_size_m(self) -> float:
        return float(self.attrs.get("cell_size_m", DEFAULT_ATTRS["cell_size_m"]))

    @property
    def rx_height_m(self) -> float:
        return float(self.attrs.get("rx_height_m", DEFAULT_ATTRS["rx_height_m"]))

    def read(self, key: str, index: int | slice | np.ndarray) -> np.ndarray:
        """Read ``key[index]`` as a NumPy array, turning a corrupt chunk into a one-line :class:`DataError`."""
        array = self.arrays[key]
        try:
            if isinstance(index, np.ndarray) and not isinstance(array, np.ndarray):
                # Zarr and HDF5 want sorted unique fancy indices; read in order and put back.
                order = np.argsort(index)
                data = np.asarray(array[index[order].tolist()] if self.format == "h5" else array.oindex[index[order]])
                out = np.empty_like(data)
                out[order] = data
                return out
            return np.asarray(array[index])
        except DataError:
            raise
        except Exception as err:  # corrupt chunks surface as many different exception types
            raise DataError(
                f"{self.path}: array {key!r}, index {_describe(index)}: cannot read ({_short(err)})"
            ) from None

    def sample(self, index: int) -> dict[str, np.ndarray]:
        """All arrays of sample ``index`` (without the leading N axis)."""
        return {key: self.read(key, index) for key in self.arrays}

    def iter_chunks(self, key: str, chunk: int = 64) -> Iterator[np.ndarray]:
        """Yield ``key`` in blocks of ``chunk`` samples, so that validation never loads a whole store."""
        n = len(self)
        for start in range(0, n, chunk):
            yield self.read(key, slice(start, min(start + chunk, n)))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> SignalDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dataset(path: str | os.PathLike[str], require_buildings: bool = False) -> SignalDataset:
    """Open a dataset and check its structure (keys, ndim, shapes, dtypes); values are checked by :func:`validate`.

    Raises :class:`DataError` with one line naming the file, the array and the problem.
    """
    path = Path(path)
    fmt = dataset_format(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    reader = {"zarr": _open_zarr, "npz": _open_npz, "h5": _open_h5}[fmt]
    dataset = reader(path)
    try:
        problems = structure_problems(dataset)
        if require_buildings and dataset.buildings is None:
            problems.insert(0, "array 'buildings' is missing (labels are needed for this command)")
        if problems:
            raise DataError(f"{path}: {problems[0]}")
    except DataError:
        dataset.close()
        raise
    return dataset


def structure_problems(dataset: SignalDataset) -> list[str]:
    """Problems of keys, ranks, shapes, dtypes and attributes (cheap: reads no array values)."""
    problems: list[str] = []
    arrays = dataset.arrays
    if "signals" not in arrays:
        return ["array 'signals' is missing"]
    # A group (HDF5, Zarr) under an array's name has no shape: name it instead of crashing on it.
    not_arrays = [key for key, value in arrays.items() if not hasattr(value, "shape") or not hasattr(value, "dtype")]
    if not_arrays:
        return [f"{key!r} is not an array (a group?)" for key in not_arrays]
    for key, ndim in _EXPECTED_NDIM.items():
        if key in arrays and len(arrays[key].shape) != ndim:
            problems.append(f"array {key!r} has {len(arrays[key].shape)} dimensions, expected {ndim}")
    if problems:
        return problems
    n, t, h, w = arrays["signals"].shape
    if min(n, t, h, w) == 0:
        problems.append(f"array 'signals' has an empty axis: shape [N={n}, T={t}, H={h}, W={w}]")
    if np.dtype(arrays["signals"].dtype).kind != "f":
        problems.append(f"array 'signals' has dtype {arrays['signals'].dtype}, expected float16 or float32")
    expected = {"buildings": (n, h, w), "tx_pos": (n, t, 3), "group": (n,), "heights": (n, h, w)}
    for key, shape in expected.items():
        if key in arrays and tuple(arrays[key].shape) != shape:
            names = {"buildings": "[N, H, W]", "tx_pos": "[N, T, 3]", "group": "[N]", "heights": "[N, H, W]"}[key]
            problems.append(
                f"array {key!r} has shape {list(arrays[key].shape)}, expected {names} = {list(shape)} "
                f"to match 'signals' {list(arrays['signals'].shape)}"
            )
    kinds = {"buildings": "biuf", "tx_pos": "f", "group": "iu", "heights": "f"}
    for key, allowed in kinds.items():
        if key in arrays and np.dtype(arrays[key].dtype).kind not in allowed:
            problems.append(f"array {key!r} has dtype {arrays[key].dtype}, which is not allowed here")
    unit = dataset.attrs.get("signal_unit", DEFAULT_ATTRS["signal_unit"])
    if unit not in SIGNAL_UNITS:
        problems.append(f"attribute 'signal_unit' is {unit!r}, expected one of {', '.join(SIGNAL_UNITS)}")
    cell = dataset.attrs.get("cell_size_m", DEFAULT_ATTRS["cell_size_m"])
    if not _is_number(cell) or not 0 < float(cell) < np.inf:
        problems.append(f"attribute 'cell_size_m' is {cell!r}, expected a positive number of metres")
    n_total, n_written = dataset.attrs.get("n_total"), dataset.attrs.get("n_written")
    if n_total is not None or n_written is not None:
        # Files from other tools may carry these names with any value: never compare blindly.
        if not (_is_number(n_total) and _is_number(n_written)):
            problems.append(f"attributes 'n_total'/'n_written' are {n_total!r}/{n_written!r}, expected numbers")
        elif n_written < n_total:
            problems.append(f"store is incomplete: {n_written} of {n_total} samples written (rerun with --resume)")
    return problems


def validate(path: str | os.PathLike[str], chunk: int = 64) -> list[str]:
    """Every problem of the dataset at ``path`` (structure and values), as lines naming the array at fault."""
    try:
        dataset = open_dataset(path)
    except DataError as err:
        return [str(err)]
    with dataset:
        problems = [f"{dataset.path}: {p}" for p in structure_problems(dataset)]
        if problems:
            return problems
        problems += [f"{dataset.path}: {p}" for p in _value_problems(dataset, chunk)]
    return problems


def _value_problems(dataset: SignalDataset, chunk: int) -> list[str]:
    problems: list[str] = []
    try:
        n_inf = sum(int(np.isinf(block).sum()) for block in dataset.iter_chunks("signals", chunk))
        if n_inf:
            problems.append(f"array 'signals' has {n_inf} infinite values (use NaN for 'not measured')")
        extreme = max(float(np.nanmax(np.abs(b), initial=0.0)) for b in dataset.iter_chunks("signals", chunk))
        if extreme > 1000:
            problems.append(f"array 'signals' has values up to {extreme:.3g} dB in magnitude, which is not plausible")
        if dataset.buildings is not None:
            bad = 0
            for block in dataset.iter_chunks("buildings", chunk):
                bad += int(np.count_nonzero(~np.isin(block, (0, 1))))
            if bad:
                problems.append(f"array 'buildings' has {bad} values not in {{0, 1}}")
        if dataset.tx_pos is not None:
            n_inf = sum(int(np.isinf(block).sum()) for block in dataset.iter_chunks("tx_pos", chunk))
            if n_inf:
                problems.append(f"array 'tx_pos' has {n_inf} infinite values (use NaN for 'unknown')")
        for key in ("group", "heights"):
            # Read the rest too: a store that validates must never fail later on a corrupt chunk.
            for _ in dataset.iter_chunks(key, chunk) if key in dataset.arrays else ():
                pass
    except DataError as err:
        problems.append(str(err).split(": ", 1)[-1])
    return problems


def info(path: str | os.PathLike[str], chunk: int = 64) -> dict[str, Any]:
    """A summary of the dataset: shapes, dtypes, value ranges, NaN fraction, building fraction, attributes."""
    with open_dataset(path) as dataset:
        n, t, h, w = dataset.shape
        lo, hi, total, n_nan, total_sum = np.inf, -np.inf, 0, 0, 0.0
        for block in dataset.iter_chunks("signals", chunk):
            block = block.astype(np.float32)
            finite = np.isfinite(block)
            n_nan += int(np.isnan(block).sum())
            total += block.size
            if finite.any():
                lo, hi = min(lo, float(block[finite].min())), max(hi, float(block[finite].max()))
                total_sum += float(block[finite].sum())
        summary: dict[str, Any] = {
            "path": str(dataset.path),
            "format": dataset.format,
            "n_samples": n,
            "frames": t,
            "height": h,
            "width": w,
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in dataset.arrays.items()},
            "signals_min_db": lo if np.isfinite(lo) else None,
            "signals_max_db": hi if np.isfinite(hi) else None,
            "signals_mean_db": total_sum / max(total - n_nan, 1) if total > n_nan else None,
            "signals_nan_fraction": n_nan / max(total, 1),
            "attrs": dataset.attrs,
        }
        if dataset.buildings is not None:
            ones = sum(int(np.count_nonzero(b == 1)) for b in dataset.iter_chunks("buildings", chunk))
            summary["building_fraction"] = ones / (n * h * w)
        if dataset.group is not None:
            values, counts = np.unique(dataset.read("group", slice(None)), return_counts=True)
            summary["groups"] = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
    return summary


# --------------------------------------------------------------------------------------------- readers


def _open_zarr(path: Path) -> SignalDataset:
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        arrays = {key: group[key] for key in ARRAY_KEYS if key in group}
        attrs = dict(group.attrs)
    except Exception as err:
        raise DataError(f"{path}: not a readable Zarr store ({_short(err)})") from None
    return SignalDataset(path=path, format="zarr", arrays=arrays, attrs=attrs)


def _open_npz(path: Path) -> SignalDataset:
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            arrays = {key: npz[key] for key in ARRAY_KEYS if key in names}
            attrs = json.loads(str(npz["attrs"])) if "attrs" in names else {}
        if not isinstance(attrs, dict):
            raise ValueError(f"member 'attrs' holds a {type(attrs).__name__}, expected a JSON object")
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable .npz file ({_short(err)})") from None
    except Exception as err:  # zlib.error and friends from a truncated member
        raise DataError(f"{path}: corrupt .npz member ({_short(err)})") from None
    return SignalDataset(path=path, format="npz", arrays=arrays, attrs=attrs)


def _open_h5(path: Path) -> SignalDataset:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({_short(err)})") from None
    try:
        arrays = {key: handle[key] for key in ARRAY_KEYS if key in handle}
        attrs = {k: _plain(v) for k, v in handle.attrs.items()}
    except Exception as err:  # a corrupt header surfaces as KeyError, RuntimeError, OSError ...
        handle.close()
        raise DataError(f"{path}: corrupt HDF5 file ({_short(err)})") from None
    return SignalDataset(path=path, format="h5", arrays=arrays, attrs=attrs, _handle=handle)


# --------------------------------------------------------------------------------------------- writers


def write_dataset(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Path:
    """Write a whole dataset atomically in the format chosen by the suffix of ``path``."""
    path = Path(path)
    fmt = dataset_format(path)
    arrays = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    if not arrays:
        raise DataError(f"{path}: nothing to write")
    attrs = {**DEFAULT_ATTRS, **_jsonable(attrs)}
    with atomic_path(path) as tmp:
        if fmt == "npz":
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays, attrs=np.array(json.dumps(attrs)))
        elif fmt == "h5":
            import h5py

            with h5py.File(tmp, "w") as f:
                for key, value in arrays.items():
                    chunks = (1, *value.shape[1:]) if value.ndim > 1 and value.size > 0 else None
                    f.create_dataset(key, data=value, chunks=chunks, compression="gzip" if chunks else None)
                for key, value in attrs.items():
                    f.attrs[key] = json.dumps(value) if isinstance(value, dict | list) else value
        else:
            _write_zarr(tmp, arrays, attrs)
    return path


def _write_zarr(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    for key, value in arrays.items():
        chunks = (1, *value.shape[1:]) if value.ndim > 1 and value.shape[0] > 0 else value.shape or None
        array = group.create_array(key, shape=value.shape, chunks=chunks, dtype=value.dtype, fill_value=0)
        if value.size:
            array[...] = value
    group.attrs.update(_jsonable(attrs))


class ZarrWriter:
    """Create a Zarr v3 store with one sample per chunk and fill it in blocks; it records how far it got."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        n_total: int,
        arrays_like: dict[str, np.ndarray],
        attrs: dict[str, Any],
    ) -> None:
        import zarr

        self.path = Path(path)
        self.group = zarr.open_group(str(self.path), mode="w", zarr_format=3)
        for key, example in arrays_like.items():
            if key not in ARRAY_KEYS + PREDICTION_KEYS:
                continue
            example = np.asarray(example)
            shape = (n_total, *example.shape[1:])
            self.group.create_array(key, shape=shape, chunks=(1, *shape[1:]), dtype=example.dtype, fill_value=0)
        self.group.attrs.update({**_jsonable(attrs), "n_total": n_total, "n_written": 0})

    @classmethod
    def reopen(cls, path: str | os.PathLike[str]) -> tuple[ZarrWriter, int]:
        """Reopen a partial store for ``--resume``; returns the writer and the number of samples written (0: the
        caller should start the store over, since its arrays may not all exist yet)."""
        import zarr

        self = cls.__new__(cls)
        self.path = Path(path)
        try:
            self.group = zarr.open_group(str(self.path), mode="r+")
            # No count yet: killed between creating the store and committing its first samples.
            written = int(self.group.attrs.get("n_written", 0))
        except Exception as err:
            raise DataError(f"{path}: cannot resume this store ({_short(err)})") from None
        return self, written

    def write(self, start: int, block: dict[str, np.ndarray]) -> None:
        """Write samples ``start .. start + len(block)``; the sample count is committed last."""
        count = len(next(iter(block.values())))
        for key, value in block.items():
            if key in self.group:
                self.group[key][start : start + count] = np.asarray(value, dtype=self.group[key].dtype)
        self.group.attrs["n_written"] = start + count


# --------------------------------------------------------------------------------------------- helpers


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], dtype: str | None = None) -> Path:
    """Copy the dataset ``src`` into ``dst`` (any of the three formats to any other)."""
    with open_dataset(src) as dataset:
        arrays = {key: dataset.read(key, slice(None)) for key in dataset.arrays}
        if dtype is not None:
            arrays["signals"] = arrays["signals"].astype(dtype)
        attrs = {k: v for k, v in dataset.attrs.items() if k not in ("n_total", "n_written")}
    return write_dataset(dst, arrays, attrs)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(attrs, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.ndarray) and value.size != 1:
        return value.tolist()  # array attributes written by other tools
    return value.item() if hasattr(value, "item") else value


def _describe(index: int | slice | np.ndarray) -> str:
    if isinstance(index, slice):
        return f"{index.start or 0}:{'' if index.stop is None else index.stop}"
    if isinstance(index, np.ndarray):
        return f"[{len(index)} samples]"
    return str(index)


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{type(err).__name__}: {text[:200]}"
