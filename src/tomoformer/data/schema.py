"""The names of the dataset contract and :class:`SignalDataset`, the read-only view every reader returns.

Arrays (N samples, each one area seen by T maps of H x W cells):

- ``signals``   float16/float32 ``[N, T, H, W]`` dB (path gain or dBm, see ``signal_unit``); NaN = not measured.
- ``buildings`` uint8 ``[N, H, W]``, 1 = building at receiver height. Optional (unlabelled data).
- ``tx_pos``    float32 ``[N, T, 3]``: transmitter row, column (cells, row 0 = north) and height (m). Optional.
- ``group``     int ``[N]``, e.g. the city style. Optional.
- ``heights``   float32 ``[N, H, W]`` building heights in metres (simulated data). Optional.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.errors import DataError

ARRAY_KEYS = ("signals", "buildings", "tx_pos", "group", "heights")
# Arrays that `tomoformer predict` writes; stores may hold them beside (or instead of) the dataset arrays.
PREDICTION_KEYS = ("probabilities", "uncertainty")
SIGNAL_UNITS = ("path_gain_db", "dbm", "db")
DEFAULT_ATTRS: dict[str, Any] = {
    "cell_size_m": 2.0,
    "frequency_hz": 3.5e9,
    "signal_unit": "path_gain_db",
    "rx_height_m": 1.5,
    "source": "unknown",
}
EXPECTED_NDIM = {"signals": 4, "buildings": 3, "tx_pos": 3, "group": 1, "heights": 3}
# Streaming reads (validate, info, value checks) hold at most this many bytes of one array at a time.
BLOCK_BYTES = 64 * 2**20


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
    # Set by data.integrity.require_valid_values once every value has been checked (each source is read once).
    values_checked: bool = False

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
                f"{self.path}: array {key!r}, index {describe_index(index)}: cannot read ({short_error(err)})"
            ) from None

    def sample(self, index: int) -> dict[str, np.ndarray]:
        """All arrays of sample ``index`` (without the leading N axis)."""
        return {key: self.read(key, index) for key in self.arrays}

    def block_size(self, key: str) -> int:
        """Samples per streaming block of ``key``: as many as fit in :data:`BLOCK_BYTES` (at least one)."""
        array = self.arrays[key]
        per_sample = int(np.prod(array.shape[1:], dtype=np.int64)) * np.dtype(array.dtype).itemsize
        return max(1, BLOCK_BYTES // max(per_sample, 1))

    def iter_chunks(self, key: str, chunk: int | None = None) -> Iterator[np.ndarray]:
        """Yield ``key`` in blocks of ``chunk`` samples (default: :meth:`block_size`), so that validation never
        loads a whole store."""
        n = int(self.arrays[key].shape[0])
        step = chunk or self.block_size(key)
        for start in range(0, n, step):
            yield self.read(key, slice(start, min(start + step, n)))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> SignalDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_number(value: Any) -> bool:
    """A real int or float (not a bool)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` with NumPy scalars made plain, so that every format stores the same JSON."""
    return json.loads(json.dumps(attrs, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def describe_index(index: int | slice | np.ndarray) -> str:
    if isinstance(index, slice):
        return f"{index.start or 0}:{'' if index.stop is None else index.stop}"
    if isinstance(index, np.ndarray):
        return f"[{len(index)} samples]"
    return str(index)


def short_error(err: BaseException) -> str:
    """``Type: first line`` of an exception, at most 200 characters of it: the tail of a one-line message."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{type(err).__name__}: {text[:200]}"
