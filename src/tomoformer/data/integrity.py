"""Stores that tell the truth: checksummed chunks, storage checks and the one value check every command shares.

* Writing: every Zarr array we write carries a ``crc32c`` checksum after compression, and every chunk is written
  (also chunks equal to the fill value), so a chunk that is missing was deleted and one that changed fails its
  checksum. HDF5 files we write carry Fletcher-32 checksums.
* Storage (cheap, at every open): no symlink inside a Zarr store, no HDF5 external storage or virtual dataset,
  and the chunks the metadata implies are present, so a deleted chunk never reads as zeros and a header claiming
  10^9 samples fails at once.
* Values (one streaming pass, shared by ``data validate``, ``train``, ``predict`` and ``evaluate``): see
  :func:`check_values`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.data.schema import ARRAY_KEYS, SignalDataset
from tomoformer.errors import DataError

# Plausible received power or path gain: thermal noise is near -174 dBm/Hz and no link gains power, so anything
# outside this range is a unit mix-up (linear power, mW) or a corrupt value, never a measurement.
DB_RANGE = (-300.0, 100.0)
# Transmitters may lie outside the grid, but not further than this many grid sizes (beyond it the geometry
# features of the models overflow and every prediction becomes NaN).
TX_GRID_MARGIN = 10
HEIGHT_RANGE_M = (0.0, 10_000.0)
_ZARR_METADATA = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}


# --------------------------------------------------------------------------------------------- writing


def checksummed_array_options() -> dict[str, Any]:
    """Keyword arguments for ``zarr.Group.create_array``: Zstandard, then a crc32c checksum of each chunk, and
    every chunk written (zarr skips chunks equal to the fill value by default, which would make a deleted chunk
    indistinguishable from an empty one)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return {"compressors": (ZstdCodec(level=0), Crc32cCodec()), "config": {"write_empty_chunks": True}}


@contextlib.contextmanager
def writing_every_chunk() -> Iterator[None]:
    """Arrays opened inside this block write every chunk (zarr reads its array config when an array is opened)."""
    import zarr

    with zarr.config.set({"array.write_empty_chunks": True}):
        yield


def has_checksum(array: Any) -> bool:
    """Whether a Zarr array's chunks carry a crc32c checksum (stores written before checksums did not)."""
    codecs = getattr(getattr(array, "metadata", None), "codecs", ()) or ()
    return any(type(codec).__name__ == "Crc32cCodec" for codec in codecs)


# Numeric dataset attributes the models and simulators read, with the ranges a real value lies in.
ATTRIBUTE_RANGES: dict[str, tuple[float, float, str]] = {
    "frequency_hz": (1e3, 1e13, "a positive frequency in Hz"),
    "rx_height_m": (HEIGHT_RANGE_M[0], HEIGHT_RANGE_M[1], "a receiver height in metres, 0 to 10 km"),
}


def attribute_problems(attrs: dict[str, Any]) -> list[str]:
    """Problems of the numeric attributes of :data:`ATTRIBUTE_RANGES` (a string, NaN, negative or absurd value
    would fail later, deep inside a model or simulator); absent attributes are fine."""
    problems = []
    for key, (low, high, what) in ATTRIBUTE_RANGES.items():
        value = attrs.get(key)
        if value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not low <= value <= high:
            problems.append(f"attribute {key!r} is {value!r}, expected {what} (in [{low:g}, {high:g}])")
    return problems


def unchecksummed_arrays(dataset: SignalDataset) -> list[str]:
    """The arrays whose chunks carry no checksum (a Zarr array without crc32c, an HDF5 dataset without
    Fletcher-32): a changed byte in them reads as a plausible value. ``.npz`` members carry zip CRC-32s."""
    if dataset.format == "zarr":
        return [key for key, array in dataset.arrays.items() if not has_checksum(array)]
    if dataset.format == "h5":
        return [
            key
            for key, array in dataset.arrays.items()
            if getattr(array, "chunks", None) and not getattr(array, "fletcher32", False)
        ]
    return []


# --------------------------------------------------------------------------------------------- storage


def storage_problems(dataset: SignalDataset) -> list[str]:
    """Problems of how the data is stored (links, external files, missing chunks); reads no chunk."""
    if dataset.format == "zarr":
        return _zarr_problems(dataset)
    if dataset.format == "h5":
        return _h5_problems(dataset)
    return []  # .npz: member sizes are checked against their headers when the file is read


def _walk(root: Path) -> tuple[list[str], dict[str, list[str]]]:
    """(symlinks, files by top-level folder) inside a store, as posix paths relative to ``root``; never follows
    links."""
    links: list[str] = []
    files: dict[str, list[str]] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as entries:
            for entry in entries:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_symlink():
                    links.append(name)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(name)
                elif not entry.is_file(follow_symlinks=False):
                    raise _SpecialFileError(name)  # a FIFO or device would block or never end when read
                elif "/" in name:
                    top, sub = name.split("/", 1)
                    files.setdefault(top, []).append(sub)
    return sorted(links), files


class _SpecialFileError(Exception):
    """An entry of a store that is neither a regular file, a folder nor a link."""


def special_file_problem(path: Path) -> str | None:
    """A one-line problem when ``path`` (a file expected) is not a regular file: a FIFO, device or folder is
    never opened (reading it could block forever or never end); None for a regular file or a missing path."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
    return f"{kind}, where a file is expected; it is not read"


def _zarr_problems(dataset: SignalDataset) -> list[str]:
    try:
        links, files = _walk(dataset.path)
    except _SpecialFileError as err:
        return [f"{err.args[0]} is not a regular file (a FIFO or device); a store holds files only"]
    except OSError as err:
        return [f"cannot list the store ({err.strerror or err})"]
    if links:
        more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
        return [f"{links[0]} is a symbolic link{more}; a store must hold its own chunks (copy the data into it)"]
    problems = []
    for key, array in dataset.arrays.items():
        # A chunk missing from an array without checksums may just equal the fill value (zarr skips writing those),
        # except in 'signals' with a finite fill value: a whole sample of one constant dB level is never real data.
        strict = has_checksum(array) or (key == "signals" and not _is_nan(getattr(array, "fill_value", 0)))
        if strict:
            problem = _missing_chunks(key, array, set(files.get(key, ())))
            if problem:
                problems.append(problem)
    return problems


def _missing_chunks(key: str, array: Any, present: set[str]) -> str | None:
    """Compare the chunk keys the metadata implies with the files present; counts without enumerating the grid
    (a header may claim 10^9 chunks)."""
    grid = tuple(int(n) for n in array.cdata_shape)
    total = math.prod(grid)
    found = {rel for rel in present if rel not in _ZARR_METADATA and _chunk_coords(rel, grid, array) is not None}
    missing = total - len(found)
    if missing <= 0:
        return None
    # The first missing key in grid order is among the first len(found) + 1 keys (itertools.product, and so
    # np.ndindex, would materialise every axis of a lying grid).
    for flat in range(total):
        first = array.metadata.encode_chunk_key(_unravel(flat, grid))
        if first not in found:
            break
    return (
        f"array {key!r}: {missing} of {total} chunks are missing (first: {key}/{first}); the store was damaged, "
        f"or its metadata claims more data than it holds (shape {list(array.shape)})"
    )


def _unravel(flat: int, grid: tuple[int, ...]) -> tuple[int, ...]:
    """C-order coordinates of chunk number ``flat`` (Python ints: a lying grid may overflow int64)."""
    coords = []
    for n in reversed(grid):
        flat, c = divmod(flat, n)
        coords.append(c)
    return tuple(reversed(coords))


def _chunk_coords(rel: str, grid: tuple[int, ...], array: Any) -> tuple[int, ...] | None:
    parts = re.split(r"[/.]", rel)
    if parts[:1] == ["c"]:
        parts = parts[1:]
    if len(parts) != len(grid) or not all(p.isdigit() for p in parts):
        return None
    coords = tuple(int(p) for p in parts)
    if any(c >= n for c, n in zip(coords, grid, strict=True)) or array.metadata.encode_chunk_key(coords) != rel:
        return None
    return coords


def _h5_problems(dataset: SignalDataset) -> list[str]:
    problems = []
    for key, array in dataset.arrays.items():
        if not hasattr(array, "id"):
            continue  # not a dataset (a group under an array's name): reported by the structure check
        if array.external:
            files = ", ".join(str(name) for name, *_ in array.external)
            problems.append(f"array {key!r} keeps its data in other files ({files}); copy the data into this file")
        elif array.is_virtual:
            problems.append(f"array {key!r} is a virtual dataset mapping other files; copy the data into this file")
        elif key == "signals" or array.fletcher32:
            problems += _h5_missing(key, array)
    return problems


def _h5_missing(key: str, array: Any) -> list[str]:
    if key == "signals" and _is_nan(array.fillvalue):
        return []  # unwritten chunks read as NaN, which is 'not measured'
    if array.chunks is None:
        stored, expected = array.id.get_storage_size(), array.size * array.dtype.itemsize
        if stored < expected:
            return [
                f"array {key!r} holds {stored} of the {expected} bytes its header claims (shape {list(array.shape)})"
            ]
        return []
    grid = [math.ceil(n / c) for n, c in zip(array.shape, array.chunks, strict=True)]
    total, stored = math.prod(grid), array.id.get_num_chunks()
    if stored < total:
        return [f"array {key!r}: {total - stored} of {total} chunks are missing (shape {list(array.shape)})"]
    return []


def _is_nan(value: Any) -> bool:
    try:
        return bool(np.isnan(value))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------- values


def check_values(
    dataset: SignalDataset, chunk: int | None = None, progress: Callable[[int], None] | None = None
) -> list[str]:
    """Every value problem of ``dataset``, reading each array once in blocks (never the whole store at once).

    Signals finite or NaN and within :data:`DB_RANGE` dB, with at least one measured (non-NaN) cell; buildings 0 or
    1; ``tx_pos`` finite or NaN, rows and columns within :data:`TX_GRID_MARGIN` grid sizes of the grid, heights
    within :data:`HEIGHT_RANGE_M` metres; group ids >= 0 and below ``len(group_names)`` when names are given;
    heights finite or NaN within :data:`HEIGHT_RANGE_M`. A chunk that cannot be read (corrupt, checksum mismatch)
    is a problem too. ``progress(n)`` is called after each block with the bytes it held. Lines name the array at fault,
    without the path.
    """
    _, _, h, w = dataset.shape
    checks = {
        "signals": _SignalCheck(),
        "buildings": _BuildingCheck(),
        "tx_pos": _TxCheck(h, w),
        "group": _GroupCheck(dataset.attrs.get("group_names")),
        "heights": _HeightCheck(),
    }
    problems: list[str] = []
    prefix = f"{dataset.path}: "
    for key in ARRAY_KEYS:
        if key not in dataset.arrays:
            continue
        check = checks[key]
        try:
            for start, block in _blocks(dataset, key, chunk):
                check.update(block, start)
                if progress is not None:
                    progress(block.nbytes)
        except DataError as err:
            problems.append(str(err).removeprefix(prefix))
            continue
        problems += check.problems()
    if "group" not in dataset.arrays:
        problems += _GroupCheck(dataset.attrs.get("group_names")).problems()
    return problems


def require_valid_values(dataset: SignalDataset) -> None:
    """Raise a one-line :class:`DataError` if :func:`check_values` finds a problem; each source is checked once."""
    if dataset.values_checked:
        return
    problems = check_values(dataset)
    if problems:
        more = f" (and {len(problems) - 1} more; see `tomoformer data validate`)" if len(problems) > 1 else ""
        raise DataError(f"{dataset.path}: {problems[0]}{more}")
    dataset.values_checked = True


def _blocks(dataset: SignalDataset, key: str, chunk: int | None) -> Iterator[tuple[int, np.ndarray]]:
    start = 0
    for block in dataset.iter_chunks(key, chunk):
        yield start, block
        start += len(block)


def _example(mask: np.ndarray, start: int) -> str:
    """``sample i, frame j`` of the first True of ``mask`` (axes N, T, ...)."""
    index = np.argwhere(mask)[0]
    where = f"sample {start + int(index[0])}"
    return where + (f", frame {int(index[1])}" if mask.ndim >= 2 else "")


class _SignalCheck:
    def __init__(self) -> None:
        self.n_inf = self.n_out = self.n_measured = 0
        self.lo, self.hi = np.inf, -np.inf

    def update(self, block: np.ndarray, start: int) -> None:
        block = block.astype(np.float32, copy=False)
        self.n_inf += int(np.isinf(block).sum())
        finite = block[np.isfinite(block)]
        self.n_measured += finite.size
        if finite.size:
            self.lo, self.hi = min(self.lo, float(finite.min())), max(self.hi, float(finite.max()))
            self.n_out += int(np.count_nonzero((finite < DB_RANGE[0]) | (finite > DB_RANGE[1])))

    def problems(self) -> list[str]:
        out = []
        if self.n_inf:
            out.append(f"array 'signals' has {self.n_inf} infinite values (use NaN for 'not measured')")
        if self.n_out:
            out.append(
                f"array 'signals' has {self.n_out} values outside the plausible {DB_RANGE[0]:g}..{DB_RANGE[1]:g} dB "
                f"(min {self.lo:.4g}, max {self.hi:.4g}): are they in dB?"
            )
        if self.n_measured == 0 and not self.n_inf:
            out.append("array 'signals' has no measured cell (every value is NaN)")
        return out


class _BuildingCheck:
    def __init__(self) -> None:
        self.bad = 0

    def update(self, block: np.ndarray, start: int) -> None:
        self.bad += int(np.count_nonzero(~np.isin(block, (0, 1))))

    def problems(self) -> list[str]:
        return [f"array 'buildings' has {self.bad} values not in {{0, 1}}"] if self.bad else []


class _TxCheck:
    def __init__(self, h: int, w: int) -> None:
        margin = TX_GRID_MARGIN * max(h, w)
        self.limits = ((-margin, h + margin), (-margin, w + margin), HEIGHT_RANGE_M)
        self.n_inf = self.n_far = self.n_height = 0
        self.far_example = self.height_example = ""

    def update(self, block: np.ndarray, start: int) -> None:
        block = block.astype(np.float64, copy=False)
        self.n_inf += int(np.isinf(block).sum())
        finite = np.isfinite(block)
        (r0, r1), (c0, c1), (z0, z1) = self.limits
        with np.errstate(invalid="ignore"):
            rows, cols, z = block[..., 0], block[..., 1], block[..., 2]
            far = finite[..., :2].all(-1) & ((rows < r0) | (rows > r1) | (cols < c0) | (cols > c1))
            high = finite[..., 2] & ((z < z0) | (z > z1))
        if far.any() and not self.far_example:
            i = tuple(np.argwhere(far)[0])
            self.far_example = f"{_example(far, start)}: row {rows[i]:.4g}, column {cols[i]:.4g}"
        if high.any() and not self.height_example:
            i = tuple(np.argwhere(high)[0])
            self.height_example = f"{_example(high, start)}: {z[i]:.4g} m"
        self.n_far += int(far.sum())
        self.n_height += int(high.sum())

    def problems(self) -> list[str]:
        out = []
        if self.n_inf:
            out.append(f"array 'tx_pos' has {self.n_inf} infinite values (use NaN for 'unknown')")
        if self.n_far:
            (r0, r1), (c0, c1), _ = self.limits
            out.append(
                f"array 'tx_pos' has {self.n_far} transmitters more than {TX_GRID_MARGIN} grid sizes outside the grid "
                f"(rows {r0}..{r1}, columns {c0}..{c1} allowed; {self.far_example}): are they in cells?"
            )
        if self.n_height:
            z0, z1 = HEIGHT_RANGE_M
            out.append(
                f"array 'tx_pos' has {self.n_height} transmitter heights outside {z0:g}..{z1:g} m "
                f"({self.height_example})"
            )
        return out


class _GroupCheck:
    def __init__(self, names: Any) -> None:
        self.names = names
        self.lo, self.hi = np.inf, -np.inf

    def update(self, block: np.ndarray, start: int) -> None:
        if block.size:
            self.lo, self.hi = min(self.lo, int(block.min())), max(self.hi, int(block.max()))

    def problems(self) -> list[str]:
        names = self.names
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            return [f"attribute 'group_names' is {str(names)[:80]!r}, expected a list of names"]
        if self.lo < 0:
            return [f"array 'group' has negative group ids (min {self.lo})"]
        if names is not None and self.hi >= len(names):
            return [f"array 'group' has group id {self.hi}, but 'group_names' names only {len(names)} groups"]
        return []


class _HeightCheck:
    def __init__(self) -> None:
        self.bad = 0

    def update(self, block: np.ndarray, start: int) -> None:
        block = block.astype(np.float32, copy=False)
        with np.errstate(invalid="ignore"):
            self.bad += int(
                np.count_nonzero(np.isinf(block) | (block < HEIGHT_RANGE_M[0]) | (block > HEIGHT_RANGE_M[1]))
            )

    def problems(self) -> list[str]:
        z0, z1 = HEIGHT_RANGE_M
        return [f"array 'heights' has {self.bad} values outside {z0:g}..{z1:g} m"] if self.bad else []
