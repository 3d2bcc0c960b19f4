"""The dataset format: one contract for Zarr v3 stores, ``.npz`` and ``.h5``/``.hdf5`` files.

The arrays and attributes are described in :mod:`tomoformer.data.schema`; the readers live in
:mod:`tomoformer.data.readers`, storage and value checks in :mod:`tomoformer.data.integrity`. This module opens
(structure and storage checked), validates, summarises, writes and converts datasets.

A Zarr store written by :class:`ZarrWriter` also records ``n_total``/``n_written`` so that an interrupted
simulation can be resumed and is never mistaken for a complete one. Every Zarr array we write carries a crc32c
checksum per chunk; stores written before checksums still read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.data.integrity import (
    attribute_problems,
    check_values,
    checksummed_array_options,
    require_valid_values,
    special_file_problem,
    storage_problems,
    writing_every_chunk,
)
from tomoformer.data.readers import READERS
from tomoformer.data.schema import (
    ARRAY_KEYS,
    DEFAULT_ATTRS,
    EXPECTED_NDIM,
    PREDICTION_KEYS,
    SIGNAL_UNITS,
    SignalDataset,
    dataset_format,
    is_number,
    jsonable,
    short_error,
)
from tomoformer.errors import DataError
from tomoformer.io import OWNER_ATTR, atomic_path, owner_stamp

__all__ = [
    "ARRAY_KEYS",
    "DEFAULT_ATTRS",
    "PREDICTION_KEYS",
    "SIGNAL_UNITS",
    "SignalDataset",
    "ZarrWriter",
    "check_values",
    "convert",
    "dataset_format",
    "info",
    "open_dataset",
    "require_valid_values",
    "structure_problems",
    "validate",
    "write_dataset",
]


def open_dataset(path: str | os.PathLike[str], require_buildings: bool = False) -> SignalDataset:
    """Open a dataset and check its structure (keys, ndim, shapes, dtypes) and storage (links, external files,
    chunks present); values are checked by :func:`validate` and :func:`require_valid_values`.

    Raises :class:`DataError` with one line naming the file, the array and the problem.
    """
    path = Path(path)
    fmt = dataset_format(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    _require_plain_storage(path, fmt)
    dataset = READERS[fmt](path)
    try:
        problems = structure_problems(dataset) or storage_problems(dataset)
        if require_buildings and dataset.buildings is None:
            problems.insert(0, "array 'buildings' is missing (labels are needed for this command)")
        if problems:
            raise DataError(f"{path}: {problems[0]}")
    except DataError:
        dataset.close()
        raise
    return dataset


def _require_plain_storage(path: Path, fmt: str) -> None:
    """A .npz/.h5 dataset must be a regular file, a Zarr store a folder whose metadata files are regular files:
    a FIFO or device is refused before anything reads it (a read could block forever)."""
    if fmt != "zarr":
        problem = special_file_problem(path)
        if problem:
            raise DataError(f"{path}: {problem}")
        return
    if not path.is_dir():
        raise DataError(f"{path}: not a folder; a Zarr store is a folder")
    with os.scandir(path) as entries:
        tops = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    for folder in [path, *tops]:
        for name in ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"):
            if os.path.lexists(folder / name) and not (folder / name).is_symlink():
                problem = special_file_problem(folder / name)
                if problem:
                    raise DataError(f"{folder / name}: {problem}")


def structure_problems(dataset: SignalDataset) -> list[str]:
    """Problems of keys, ranks, shapes, dtypes and attributes (cheap: reads no array values)."""
    problems: list[str] = []
    arrays = dataset.arrays
    if "signals" not in arrays:
        if "heights" in arrays and dataset.attrs.get("kind") == "geometry":
            # A geometry store (tomoformer geometry import): buildings and heights only, by design.
            return [
                "a geometry store (buildings and heights, no 'signals'); simulate signal maps on it first: "
                f"tomoformer simulate --geometry {dataset.path} --out DATA.zarr"
            ]
        return ["array 'signals' is missing"]
    # A group (HDF5, Zarr) under an array's name has no shape: name it instead of crashing on it.
    not_arrays = [key for key, value in arrays.items() if not hasattr(value, "shape") or not hasattr(value, "dtype")]
    if not_arrays:
        return [f"{key!r} is not an array (a group?)" for key in not_arrays]
    for key, ndim in EXPECTED_NDIM.items():
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
    if not is_number(cell) or not 0 < float(cell) < np.inf:
        problems.append(f"attribute 'cell_size_m' is {cell!r}, expected a positive number of metres")
    problems += attribute_problems(dataset.attrs)
    n_total, n_written = dataset.attrs.get("n_total"), dataset.attrs.get("n_written")
    if n_total is not None or n_written is not None:
        # Files from other tools may carry these names with any value: never compare blindly.
        if not (is_number(n_total) and is_number(n_written)):
            problems.append(f"attributes 'n_total'/'n_written' are {n_total!r}/{n_written!r}, expected numbers")
        elif n_written < n_total:
            problems.append(f"store is incomplete: {n_written} of {n_total} samples written (rerun with --resume)")
    return problems


def validate(
    path: str | os.PathLike[str],
    chunk: int | None = None,
    quick: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Every problem of the dataset at ``path``, as lines naming the file and the array at fault.

    Checks structure and storage (missing chunks, links, external files), then reads every chunk of every array
    (corrupt chunks, checksums) and checks the values (:func:`check_values`), unless ``quick`` (metadata only).
    ``progress(done, total)`` is called with the bytes read so far (decoded) over all arrays.
    """
    try:
        dataset = open_dataset(path)
    except DataError as err:
        return [str(err)]
    with dataset:
        if quick:
            return []
        total = sum(int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize for a in dataset.arrays.values())
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        return [f"{dataset.path}: {p}" for p in check_values(dataset, chunk, advance)]


def info(path: str | os.PathLike[str], chunk: int | None = None) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------- writers


def write_dataset(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Path:
    """Write a whole dataset atomically in the format chosen by the suffix of ``path`` (with checksums: crc32c
    per Zarr chunk, Fletcher-32 per HDF5 chunk, CRC-32 per ``.npz`` member)."""
    path = Path(path)
    fmt = dataset_format(path)
    arrays = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    if not arrays:
        raise DataError(f"{path}: nothing to write")
    attrs = {**DEFAULT_ATTRS, **jsonable(attrs)}
    with atomic_path(path) as tmp:
        if fmt == "npz":
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays, attrs=np.array(json.dumps(attrs)))
        elif fmt == "h5":
            import h5py

            with h5py.File(tmp, "w") as f:
                for key, value in arrays.items():
                    chunks = (1, *value.shape[1:]) if value.ndim > 1 else value.shape
                    chunks = chunks if value.size > 0 and value.ndim > 0 else None
                    options = {"compression": "gzip", "fletcher32": True} if chunks else {}
                    f.create_dataset(key, data=value, chunks=chunks, **options)
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
        array = group.create_array(
            key, shape=value.shape, chunks=chunks, dtype=value.dtype, fill_value=0, **checksummed_array_options()
        )
        if value.size:
            array[...] = value
    group.attrs.update({**jsonable(attrs), OWNER_ATTR: owner_stamp(path)})  # this store is ours (tomoformer.io.is_ours)


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
        # The ownership stamp goes into the group's first metadata write, so that a kill at any point leaves
        # either an empty folder or a store that says it is ours (never an unstamped one we may not delete).
        self.path.mkdir(parents=True, exist_ok=True)
        stamp = owner_stamp(self.path)
        self.group = zarr.open_group(str(self.path), mode="w", zarr_format=3, attributes={OWNER_ATTR: stamp})
        for key, example in arrays_like.items():
            if key not in ARRAY_KEYS + PREDICTION_KEYS:
                continue
            example = np.asarray(example)
            shape = (n_total, *example.shape[1:])
            self.group.create_array(
                key,
                shape=shape,
                chunks=(1, *shape[1:]),
                dtype=example.dtype,
                fill_value=0,
                **checksummed_array_options(),
            )
        self.group.attrs.update({**jsonable(attrs), OWNER_ATTR: stamp, "n_total": n_total, "n_written": 0})

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
            raise DataError(f"{path}: cannot resume this store ({short_error(err)})") from None
        return self, written

    def write(self, start: int, block: dict[str, np.ndarray]) -> None:
        """Write samples ``start .. start + len(block)``; the sample count is committed last."""
        count = len(next(iter(block.values())))
        for key, value in block.items():
            if key in self.group:
                with writing_every_chunk():  # a sample equal to the fill value still gets its chunk
                    array = self.group[key]
                array[start : start + count] = np.asarray(value, dtype=array.dtype)
        self.group.attrs["n_written"] = start + count


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], dtype: str | None = None) -> Path:
    """Copy the dataset ``src`` into ``dst`` (any of the three formats to any other); refuses what
    ``data validate`` refuses."""
    with open_dataset(src) as dataset:
        require_valid_values(dataset)
        arrays = {key: dataset.read(key, slice(None)) for key in dataset.arrays}
        if dtype is not None:
            arrays["signals"] = arrays["signals"].astype(dtype)
        attrs = {k: v for k, v in dataset.attrs.items() if k not in ("n_total", "n_written", OWNER_ATTR)}
    return write_dataset(dst, arrays, attrs)
