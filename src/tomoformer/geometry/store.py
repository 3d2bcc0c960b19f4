"""Geometry-only stores: building-height tiles without signals, written by ``tomoformer geometry import`` and read
by ``tomoformer simulate --geometry``.

A geometry store is our dataset format minus ``signals``: ``buildings`` uint8 [N, H, W] (height above the
receiver), ``heights`` float32 [N, H, W] metres, ``group`` int16 [N] (index of the source file, named in the
``group_names`` attribute), attribute ``kind`` = "geometry". Training and evaluation refuse it (no signals);
``simulate --geometry`` also accepts a full dataset that has ``heights``.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.data.format import ZarrWriter, dataset_format, write_dataset
from tomoformer.data.readers import plain_attr
from tomoformer.data.schema import jsonable
from tomoformer.errors import ConfigError, DataError
from tomoformer.io import remove_ours, replace

GEOMETRY_KIND = "geometry"


@dataclass
class ImportOptions:
    """``tomoformer geometry import`` settings (recorded in the store's ``import_options`` attribute)."""

    cell_size_m: float = 2.0
    tile: int = 100
    stride: int = 50
    rotations: int = 4
    seed: int = 0
    min_built_fraction: float = 0.02
    rx_height_m: float = 1.5
    default_height_m: tuple[float, float] = (6.0, 15.0)
    metres_per_level: float = 3.0
    layer: str | None = None
    crs: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    licence: str | None = None

    def validate(self) -> None:
        """ConfigError naming the flag for values that cannot work."""
        checks = [
            (self.cell_size_m > 0 and np.isfinite(self.cell_size_m), "--cell-size-m must be a positive number"),
            (self.cell_size_m <= 1000, "--cell-size-m must be at most 1000 metres"),
            (2 <= self.tile <= MAX_TILE, f"--tile must be 2 to {MAX_TILE} cells"),
            (1 <= self.stride <= MAX_TILE * 100, f"--stride must be 1 to {MAX_TILE * 100} cells"),
            (1 <= self.rotations <= MAX_ROTATIONS, f"--rotations must be 1 to {MAX_ROTATIONS}"),
            (0 <= self.min_built_fraction < 1, "--min-built-fraction must be in [0, 1)"),
            (0 <= self.rx_height_m <= 1000, "--rx-height-m must be 0 to 1000 metres"),
            (
                0 < self.default_height_m[0] <= self.default_height_m[1] < 1000,
                "--default-height-m must be LO,HI with 0 < LO <= HI < 1000 metres",
            ),
            (0 < self.metres_per_level < 20, "--metres-per-level must be in (0, 20)"),
        ]
        if self.bbox is not None:
            x0, y0, x1, y1 = self.bbox
            ok = -180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90
            checks.append((ok, "--bbox must be MIN_LON,MIN_LAT,MAX_LON,MAX_LAT with min < max"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass
class ImportSummary:
    """What an import wrote: tiles per source, height rules per source, seconds."""

    path: Path
    tiles: dict[str, int]
    height_rules: dict[str, dict[str, int]]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def import_geometry(
    sources: list[str | Path], out: str | Path, options: ImportOptions, progress: bool = True
) -> ImportSummary:
    """Read every source, cut it into tiles and write them to ``out`` (.zarr streamed in blocks; .npz/.h5 at once).

    All sources are read (and every bad-input error raised) before anything is written; a Zarr store is filled
    under a hidden ``.partial`` name and renamed when complete.
    """
    from tomoformer.geometry.footprints import read_footprints
    from tomoformer.geometry.rasterise import Rasteriser

    start = time.perf_counter()
    options.validate()
    out = Path(out)
    fmt = dataset_format(out)
    seeds = np.random.SeedSequence(options.seed).spawn(2 * len(sources))
    footprints = [
        read_footprints(
            src,
            layer=options.layer,
            crs=options.crs,
            bbox=options.bbox,
            default_height_m=options.default_height_m,
            metres_per_level=options.metres_per_level,
            licence=options.licence,
            seed=int(seeds[2 * i].generate_state(1)[0]),
        )
        for i, src in enumerate(sources)
    ]
    names = _unique([f.name for f in footprints])
    plans = []
    for i, fp in enumerate(footprints):
        rasteriser = Rasteriser(fp)
        rng = np.random.default_rng(seeds[2 * i + 1])
        plans.append(
            (rasteriser, rasteriser.plan(options.tile, options.cell_size_m, options.stride, options.rotations, rng))
        )
    attrs = {
        "kind": GEOMETRY_KIND,
        "cell_size_m": options.cell_size_m,
        "rx_height_m": options.rx_height_m,
        "source": "footprints: " + ", ".join(str(f.path.name) for f in footprints),
        "licence": "; ".join(sorted({f.licence for f in footprints})),
        "group_names": names,
        "height_rules": {name: f.rule_counts() for name, f in zip(names, footprints, strict=True)},
        "footprint_crs": {name: f.crs for name, f in zip(names, footprints, strict=True)},
        "import_options": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in options.__dict__.items() if k != "licence"
        },
    }

    work = [(group, rasteriser, placement) for group, (rasteriser, plan) in enumerate(plans) for placement in plan]
    placements: list[list[float]] = []
    counts = [0] * len(footprints)
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    blocks: list[dict[str, np.ndarray]] = []
    writer: ZarrWriter | None = None
    try:
        for group, rasteriser, placement in _track(work, progress):
            heights = rasteriser.tile(placement, options.tile, options.cell_size_m)
            built = heights > options.rx_height_m
            if not built.any() or float(built.mean()) < options.min_built_fraction:
                continue
            counts[group] += 1
            placements.append([group, round(placement.x, 2), round(placement.y, 2), round(placement.angle_deg, 3)])
            block = {
                "buildings": built.astype(np.uint8)[None],
                "heights": heights[None],
                "group": np.array([group], np.int16),
            }
            blocks.append(block)
            if fmt == "zarr" and len(blocks) == _BLOCK:
                writer = _flush(writer, partial, len(work), attrs, blocks, len(placements) - len(blocks))
        if fmt == "zarr" and blocks:
            writer = _flush(writer, partial, len(work), attrs, blocks, len(placements) - len(blocks))
        n = len(placements)
        if n == 0:
            bbox = f" inside --bbox {options.bbox}" if options.bbox else ""
            raise DataError(
                f"{', '.join(str(s) for s in sources)}: no {options.tile}x{options.tile} tile of "
                f"{options.cell_size_m:g} m cells{bbox} has buildings above {options.rx_height_m:g} m on at least "
                f"{options.min_built_fraction:g} of its cells (empty crop); try a smaller --tile or "
                "--min-built-fraction"
            )
        final_attrs = {**attrs, "tile_placements": placements, "tiles_per_group": dict(zip(names, counts, strict=True))}
        if writer is None:
            arrays = {key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]}  # .npz / .h5
            write_dataset(out, arrays, final_attrs)
        else:
            for key in ("buildings", "heights", "group"):
                array = writer.group[key]
                array.resize((n, *array.shape[1:]))
            writer.group.attrs.update({**jsonable(final_attrs), "n_total": n, "n_written": n})
            replace(partial, out)
    finally:
        if writer is not None and partial.exists():
            remove_ours(partial)  # left only by a failure: the temporary store of this run
    seconds = time.perf_counter() - start
    return ImportSummary(out, dict(zip(names, counts, strict=True)), attrs["height_rules"], seconds)


MAX_TILE = 4096  # cells per tile side: one tile is then 64 MiB of float32 heights
MAX_ROTATIONS = 360
_BLOCK = 64  # tiles per Zarr write: one write per tile would spend more time in Zarr than in rasterising


def _flush(
    writer: ZarrWriter | None, partial: Path, n_max: int, attrs: dict[str, Any], blocks: list, start: int
) -> ZarrWriter:
    """Write the pending tiles ``blocks`` at ``start`` (creating the partial store first) and empty the list."""
    if writer is None:
        remove_ours(partial)  # a partial store of an earlier run (never someone else's)
        writer = ZarrWriter(partial, n_total=n_max, arrays_like=blocks[0], attrs=attrs)
    writer.write(start, {key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]})
    blocks.clear()
    return writer


@dataclass
class GeometryTiles:
    """Heights of a geometry store (or of any dataset with ``heights``), read tile by tile."""

    path: Path
    heights: Any  # [N, H, W] float metres (lazy for Zarr/HDF5)
    group: np.ndarray | None
    attrs: dict[str, Any]
    _handle: Any = None

    def __len__(self) -> int:
        return int(self.heights.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.heights.shape[1]), int(self.heights.shape[2])

    def tile(self, index: int) -> np.ndarray:
        """Heights float32 [H, W] metres of tile ``index % N`` (the tiles cycle when more samples are asked for)."""
        try:
            out = np.asarray(self.heights[index % len(self)], dtype=np.float32)
        except Exception as err:
            raise DataError(f"{self.path}: array 'heights', index {index % len(self)}: cannot read ({err})") from None
        if not np.isfinite(out).all():
            raise DataError(f"{self.path}: array 'heights', index {index % len(self)}: holds NaN or infinite values")
        return np.maximum(out, 0.0)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def open_geometry(path: str | Path) -> GeometryTiles:
    """Open the ``heights`` of a geometry store or dataset (.zarr, .npz, .h5) for simulation; DataError otherwise."""
    path = Path(path)
    fmt = dataset_format(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    handle = None
    try:
        if fmt == "zarr":
            import zarr

            root = zarr.open_group(str(path), mode="r")
            arrays = {k: root[k] for k in ("heights", "group") if k in root}
            attrs = dict(root.attrs)
        elif fmt == "npz":
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in ("heights", "group") if k in npz.files}
                attrs = json.loads(str(npz["attrs"])) if "attrs" in npz.files else {}
        else:
            import h5py

            handle = h5py.File(path, "r")
            arrays = {k: handle[k] for k in ("heights", "group") if k in handle}
            attrs = {k: plain_attr(v) for k, v in handle.attrs.items()}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        if handle is not None:
            handle.close()
        raise DataError(f"{path}: not a readable geometry store ({type(err).__name__}: {err})") from None
    except Exception as err:  # zarr and h5py raise many types for damaged stores
        if handle is not None:
            handle.close()
        raise DataError(f"{path}: not a readable geometry store ({type(err).__name__}: {err})") from None
    problem = _geometry_problem(arrays, attrs)
    if problem:
        if handle is not None:
            handle.close()
        raise DataError(f"{path}: {problem}")
    group = np.asarray(arrays["group"][:]).astype(np.int64) if "group" in arrays else None
    return GeometryTiles(path, arrays["heights"], group, attrs, handle)


def _geometry_problem(arrays: dict[str, Any], attrs: dict[str, Any]) -> str | None:
    heights = arrays.get("heights")
    if heights is None:
        return "array 'heights' is missing (a geometry store from `tomoformer geometry import` has it)"
    if len(heights.shape) != 3 or min(heights.shape) == 0:
        return f"array 'heights' has shape {list(heights.shape)}, expected [N, H, W] with no empty axis"
    if np.dtype(heights.dtype).kind != "f":
        return f"array 'heights' has dtype {heights.dtype}, expected float32"
    if "group" in arrays and tuple(arrays["group"].shape) != (heights.shape[0],):
        return f"array 'group' has shape {list(arrays['group'].shape)}, expected [{heights.shape[0]}]"
    n_total, n_written = attrs.get("n_total"), attrs.get("n_written")
    if isinstance(n_total, int) and isinstance(n_written, int) and n_written < n_total:
        return f"store is incomplete: {n_written} of {n_total} tiles written"
    cell = attrs.get("cell_size_m", 2.0)
    if not isinstance(cell, int | float) or isinstance(cell, bool) or not 0 < cell < np.inf:
        return f"attribute 'cell_size_m' is {cell!r}, expected a positive number of metres"
    return None


def _track(items: list, progress: bool):
    if not progress:
        return items
    from rich.progress import track

    return track(items, description="rasterising")


def _unique(names: list[str]) -> list[str]:
    """Source names made unique (a.gpkg and other/a.gpkg become a, a-2)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out
