"""Readers of the three formats: each returns a :class:`SignalDataset` or raises one-line :class:`DataError`.

Checks that must happen before any data is touched live here: sizes of ``.npz`` members against their headers
(a lying header must fail, not allocate gigabytes) and HDF5 links to other files (never followed).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.data.schema import ARRAY_KEYS, SignalDataset, short_error
from tomoformer.errors import DataError


def open_zarr(path: Path) -> SignalDataset:
    """A Zarr store (v3, or v2 from other tools); arrays stay lazy."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        arrays = {key: group[key] for key in ARRAY_KEYS if key in group}
        attrs = dict(group.attrs)
    except Exception as err:
        raise DataError(f"{path}: not a readable Zarr store ({short_error(err)})") from None
    return SignalDataset(path=path, format="zarr", arrays=arrays, attrs=attrs)


def open_npz(path: Path) -> SignalDataset:
    """An ``.npz`` file, read whole (it has no chunks to stream)."""
    try:
        _check_npz_sizes(path)
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            arrays = {key: npz[key] for key in ARRAY_KEYS if key in names}
            attrs = json.loads(str(npz["attrs"])) if "attrs" in names else {}
        if not isinstance(attrs, dict):
            raise ValueError(f"member 'attrs' holds a {type(attrs).__name__}, expected a JSON object")
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable .npz file ({short_error(err)})") from None
    except Exception as err:  # zlib.error and friends from a truncated member
        raise DataError(f"{path}: corrupt .npz member ({short_error(err)})") from None
    return SignalDataset(path=path, format="npz", arrays=arrays, attrs=attrs)


def _check_npz_sizes(path: Path) -> None:
    """Compare each array member's header (shape, dtype) with the member's stored size, before NumPy allocates it."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            if key not in ARRAY_KEYS:
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in ((1, 0), (2, 0)):
                    continue  # NumPy reads (or refuses) other versions itself
                header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = header(member)
                if dtype.hasobject:
                    continue  # refused by allow_pickle=False when read
                expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
                stored = info.file_size - member.tell()
                if expected != stored:
                    raise DataError(
                        f"{path}: array {key!r}: header claims shape {list(shape)} ({expected} bytes) but the member "
                        f"holds {stored} bytes"
                    )


def open_h5(path: Path) -> SignalDataset:
    """An HDF5 file; arrays stay lazy. Links to other files are refused, never followed."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({short_error(err)})") from None
    try:
        for key in ARRAY_KEYS:
            link = handle.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise DataError(
                    f"{path}: array {key!r} is a link to another file ({link.filename}); copy the data into this file"
                )
        arrays = {key: handle[key] for key in ARRAY_KEYS if key in handle}
        attrs = {k: plain_attr(v) for k, v in handle.attrs.items()}
    except DataError:
        handle.close()
        raise
    except Exception as err:  # a corrupt header surfaces as KeyError, RuntimeError, OSError ...
        handle.close()
        raise DataError(f"{path}: corrupt HDF5 file ({short_error(err)})") from None
    return SignalDataset(path=path, format="h5", arrays=arrays, attrs=attrs, _handle=handle)


def plain_attr(value: Any) -> Any:
    """An HDF5 attribute as plain Python (JSON strings decoded, arrays as lists)."""
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


READERS = {"zarr": open_zarr, "npz": open_npz, "h5": open_h5}
