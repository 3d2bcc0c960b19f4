"""Import a RadioMapSeer tree (the field's standard radio-map dataset; users download it themselves).

Layout read: ``png/buildings_complete/{map}.png`` (building mask, 256 x 256 px at 1 m), ``gain/{SIM}/{map}_{tx}.png``
(SIM = DPM, IRT2, IRT4, carsDPM, ...: 8-bit path gain, linear in dB from -186 dB at 0 to -47 dB at 255) and
``png/antennas/{map}_{tx}.png`` (the transmitter's pixel set). Each sample is one map seen from ``frames``
transmitters; gain 0 is the simulator's floor (nothing received, and every building pixel) and becomes NaN,
"nothing received", as in our format. Image row 0 is taken as north.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.data.format import ZarrWriter, dataset_format, write_dataset
from tomoformer.data.integrity import special_file_problem
from tomoformer.errors import ConfigError, DataError
from tomoformer.io import remove_ours, replace

GAIN_MIN_DB, GAIN_MAX_DB = -186.0, -47.0
SIMULATIONS = ("DPM", "IRT2", "IRT4", "carsDPM", "carsIRT2", "carsIRT4")
FREQUENCY_HZ = 5.9e9
CELL_SIZE_M = 1.0
_GAIN_NAME = re.compile(r"^(\d+)_(\d+)\.png$", re.IGNORECASE)
_MAP_NAME = re.compile(r"^(\d+)\.png$", re.IGNORECASE)


@dataclass
class RadioMapSeerOptions:
    """What to import: simulation, maps (None = all), transmitters per sample and samples per map, tx height."""

    simulation: str = "DPM"
    maps: list[int] | None = None
    frames: int = 80
    samples_per_map: int = 1
    tx_height_m: float = 1.5
    seed: int = 0


def gain_to_db(pixels: np.ndarray) -> np.ndarray:
    """8-bit gain pixels to path gain float32 dB; 0 (the floor: nothing received, buildings) becomes NaN."""
    pixels = np.asarray(pixels)
    db = GAIN_MIN_DB + pixels.astype(np.float32) * np.float32((GAIN_MAX_DB - GAIN_MIN_DB) / 255.0)
    return np.where(pixels == 0, np.float32(np.nan), db).astype(np.float32)


MAX_MAP_NUMBER = 99_999  # RadioMapSeer has 701 maps; a larger number is a typo that would allocate a huge list
MAX_IMAGE_PIXELS = 1 << 24  # 4096 x 4096; RadioMapSeer images are 256 x 256


def parse_maps(text: str) -> list[int]:
    """``"0-99,150,200-201"`` to [0, 1, ..., 99, 150, 200, 201]; ConfigError on anything else."""
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ConfigError(f"--maps: expected map numbers and ranges like 0-99,150, got {text!r}")
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise ConfigError(f"--maps: range {part.strip()!r} ends before it starts")
        if b > MAX_MAP_NUMBER or len(out) + (b - a + 1) > MAX_MAP_NUMBER + 1:
            raise ConfigError(f"--maps: {part.strip()!r} goes beyond map {MAX_MAP_NUMBER:,} (the bound of --maps)")
        out += range(a, b + 1)
    return sorted(set(out))


@dataclass
class _Plan:
    """Per map, the transmitter ids of each of its samples."""

    maps: list[int]
    samples: list[tuple[int, list[int]]]  # (map, tx ids)
    shape: tuple[int, int]


def plan_import(root: Path, options: RadioMapSeerOptions) -> _Plan:
    """Check the tree (every file that will be read exists) and choose the transmitters of every sample.

    Raises DataError naming the missing folder or file before anything is written.
    """
    if options.simulation not in SIMULATIONS:
        raise ConfigError(f"--simulation {options.simulation!r}: expected one of {', '.join(SIMULATIONS)}")
    if options.frames < 1 or options.samples_per_map < 1:
        raise ConfigError("--frames and --samples-per-map must be at least 1")
    if not root.is_dir():
        raise DataError(f"{root}: no such directory (expected a RadioMapSeer tree)")
    buildings_dir = root / "png" / "buildings_complete"
    gain_dir = root / "gain" / options.simulation
    antenna_dir = root / "png" / "antennas"
    for folder in (buildings_dir, gain_dir, antenna_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: missing folder (not a RadioMapSeer tree, or another simulation?)")
    found = sorted(int(m.group(1)) for p in buildings_dir.iterdir() if (m := _MAP_NAME.match(p.name)))
    maps = options.maps if options.maps is not None else found
    if not maps:
        raise DataError(f"{buildings_dir}: no map images ({{map}}.png)")
    gains: dict[int, list[int]] = {}
    for p in gain_dir.iterdir():
        if m := _GAIN_NAME.match(p.name):
            gains.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    antennas = {p.name for p in antenna_dir.iterdir()}
    need = options.frames * options.samples_per_map
    samples: list[tuple[int, list[int]]] = []
    for map_id in maps:
        if not (buildings_dir / f"{map_id}.png").is_file():
            raise DataError(f"{buildings_dir / f'{map_id}.png'}: missing file (map {map_id})")
        txs = sorted(gains.get(map_id, []))
        if len(txs) < need:
            raise DataError(
                f"{gain_dir}: map {map_id} has {len(txs)} transmitter images, but --frames {options.frames} x "
                f"--samples-per-map {options.samples_per_map} needs {need}"
            )
        for tx in txs:
            if f"{map_id}_{tx}.png" not in antennas:
                raise DataError(f"{antenna_dir / f'{map_id}_{tx}.png'}: missing file (transmitter of map {map_id})")
        # All transmitters in their own order when a sample takes them all; else a seeded draw per map.
        rng = np.random.default_rng(np.random.SeedSequence([options.seed, map_id]))
        chosen = txs if need == len(txs) else [txs[i] for i in rng.permutation(len(txs))[:need]]
        for s in range(options.samples_per_map):
            samples.append((map_id, chosen[s * options.frames : (s + 1) * options.frames]))
    shape = _read_png(buildings_dir / f"{maps[0]}.png").shape
    return _Plan(list(maps), samples, (int(shape[0]), int(shape[1])))


def read_sample(root: Path, simulation: str, map_id: int, txs: list[int], shape: tuple[int, int], tx_height_m: float):
    """Arrays of one sample: signals float32 [T, H, W] dB, buildings uint8 [H, W], tx_pos float32 [T, 3]."""
    building_png = root / "png" / "buildings_complete" / f"{map_id}.png"
    buildings = (_read_png(building_png, shape) > 0).astype(np.uint8)
    signals = np.empty((len(txs), *shape), np.float32)
    tx_pos = np.empty((len(txs), 3), np.float32)
    for t, tx in enumerate(txs):
        signals[t] = gain_to_db(_read_png(root / "gain" / simulation / f"{map_id}_{tx}.png", shape))
        antenna_png = root / "png" / "antennas" / f"{map_id}_{tx}.png"
        rows, cols = np.nonzero(_read_png(antenna_png, shape))
        if len(rows) == 0:
            raise DataError(f"{antenna_png}: no transmitter pixel (the image is all zero)")
        tx_pos[t] = (rows.mean(), cols.mean(), tx_height_m)
    return signals, buildings, tx_pos


def import_radiomapseer(
    root: str | Path,
    out: str | Path,
    options: RadioMapSeerOptions,
    progress: Callable[[Any], Any] | None = None,
) -> tuple[Path, int, float]:
    """Convert the tree at ``root`` into the dataset ``out``; returns (path, samples, seconds).

    A Zarr output is written sample by sample under a hidden ``.partial`` name (701 maps x 80 frames of 256 x 256
    at float16 is ~7 GB: never all in memory) and renamed when complete; .npz/.h5 are assembled in memory.
    """
    start = time.perf_counter()
    root, out = Path(root), Path(out)
    fmt = dataset_format(out)
    plan = plan_import(root, options)
    attrs = {
        "cell_size_m": CELL_SIZE_M,
        "frequency_hz": FREQUENCY_HZ,
        "signal_unit": "path_gain_db",
        "rx_height_m": 1.5,
        "source": f"RadioMapSeer gain/{options.simulation}",
        "licence": "RadioMapSeer (Yapar, Levie, Kutyniok, Caire): see the dataset's own terms",
        "radiomapseer": {
            "simulation": options.simulation,
            "maps": plan.maps,
            "tx_ids": [txs for _, txs in plan.samples],
            "gain_png_range_db": [GAIN_MIN_DB, GAIN_MAX_DB],
            "tx_height_m": options.tx_height_m,
            "seed": options.seed,
        },
        # No `group`: the tree does not say which of the six cities a map shows; map ids allow any split.
        "map_ids": [m for m, _ in plan.samples],
    }
    items = enumerate(plan.samples)
    if progress is not None:
        items = progress(list(items))
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    writer: ZarrWriter | None = None
    collected: list[dict[str, np.ndarray]] = []
    try:
        for k, (map_id, txs) in items:
            signals, buildings, tx_pos = read_sample(
                root, options.simulation, map_id, txs, plan.shape, options.tx_height_m
            )
            block = {
                # float16 steps (<= 0.06 dB at -186 dB) are far below the PNG's 0.55 dB quantisation.
                "signals": signals[None].astype(np.float16),
                "buildings": buildings[None],
                "tx_pos": tx_pos[None],
            }
            if fmt != "zarr":
                collected.append(block)
                continue
            if writer is None:
                remove_ours(partial)  # a partial store of an earlier run (never someone else's)
                writer = ZarrWriter(partial, n_total=len(plan.samples), arrays_like=block, attrs=attrs)
            writer.write(k, block)
        if writer is None:
            arrays = {key: np.concatenate([b[key] for b in collected]) for key in collected[0]}
            write_dataset(out, arrays, attrs)
        else:
            replace(partial, out)
    finally:
        if writer is not None and partial.exists():
            remove_ours(partial)  # left only by a failure: the temporary store of this run
    return out, len(plan.samples), time.perf_counter() - start


def _read_png(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A PNG as a 2D uint8 array (first channel of colour images); DataError naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    problem = special_file_problem(path)
    if problem:
        raise DataError(f"{path}: {problem}")
    try:
        with Image.open(path) as image:
            width, height = image.size  # from the header: checked before any pixel is decoded
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(f"{path}: {width} x {height} pixels, more than {MAX_IMAGE_PIXELS:,}; refused")
            array = np.asarray(image)
    except FileNotFoundError:
        raise DataError(f"{path}: missing file") from None
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"{path}: not a readable PNG ({type(err).__name__})") from None
    if array.ndim == 3:
        array = array[..., 0]
    if array.ndim != 2 or array.dtype != np.uint8:
        raise DataError(f"{path}: expected an 8-bit greyscale image, got {array.dtype} of shape {list(array.shape)}")
    if shape is not None and array.shape != shape:
        raise DataError(f"{path}: image is {array.shape[0]}x{array.shape[1]}, the others are {shape[0]}x{shape[1]}")
    return array
