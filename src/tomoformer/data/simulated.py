"""Simulated datasets on disk: ``simulate_dataset`` writes (resumable, chunk by chunk) what the simulators make,
``calibrate_dataset`` fits the fast simulator to a stored ray-traced dataset.

The simulators (tomoformer.sim) take configs and arrays; this module is where their output meets the store
formats (tomoformer.data.format) and the output policy (tomoformer.outputs).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.data.format import ZarrWriter, dataset_format, open_dataset, write_dataset
from tomoformer.errors import ConfigError, DataError
from tomoformer.io import is_ours, remove, remove_tree, replace
from tomoformer.outputs import check_not_input, check_output, output_lock
from tomoformer.sim import STYLES, SimConfig, dataset_attrs, simulate_samples
from tomoformer.sim.calibrate import Calibration, calibrate_arrays


def simulate_dataset(
    out: Path,
    n: int,
    config: SimConfig,
    seed: int = 0,
    device: str = "cpu",
    chunk: int = 32,
    resume: bool = False,
    progress: bool = True,
    ray_options: Any = None,
    scene: str | None = None,
    overwrite: bool = False,
    inputs: tuple[str | None, ...] = (),
    geometry: Any = None,
) -> Path:
    """Simulate ``n`` samples into ``out``. A Zarr store is filled under a hidden ``.partial`` name and renamed
    when complete; ``resume`` continues such a partial store where it stopped. With ``ray_options``
    (tomoformer.sim.sionna.RayOptions) the samples are ray traced with Sionna RT, of ``scene`` if given. With
    ``geometry`` (a tomoformer.sim.HeightTiles such as tomoformer.geometry.source.GeometrySource) sample i stands
    on its tile i mod N, and the dataset carries the geometry's attributes (its ``dataset_attrs()``).

    ``out`` follows the output policy (tomoformer.outputs): an existing output needs ``overwrite`` (and is never a
    folder we did not write), and one ``simulate`` at a time writes it (``out.lock``)."""
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    fmt = dataset_format(out)
    attrs = {**dataset_attrs(config), "seed": seed}
    attrs["group_names"] = _group_names()
    if ray_options is not None:
        from tomoformer.sim.sionna import import_sionna, sionna_attrs, sionna_samples

        import_sionna(device)  # a missing sionna-rt or LLVM fails here, before any file is touched
        if scene:
            from tomoformer.sim.scenes import load_real_scene

            load_real_scene(scene)  # an unknown scene too
        attrs = {**sionna_attrs(config, ray_options, scene), "seed": seed}
    if geometry is not None:
        attrs.update(geometry.dataset_attrs())
        if "ray_tracing" in attrs:
            attrs["ray_tracing"] = {**attrs["ray_tracing"], "scene": "geometry"}

    def block_at(start: int) -> dict[str, np.ndarray]:
        if ray_options is not None:
            block = sionna_samples(config, seed, start, min(chunk, n - start), device, ray_options, scene, geometry)
        else:
            block = simulate_samples(config, seed, start, min(chunk, n - start), device, geometry=geometry)
        # float16 halves the store; its 0.03-0.1 dB steps are far below the simulated noise.
        block["signals"] = block["signals"].astype(np.float16)
        return block

    if resume and overwrite:
        raise ConfigError("give --resume or --overwrite, not both")
    check_not_input(out, inputs)
    with output_lock(out, "simulate"):
        return _simulate_into(out, fmt, n, chunk, attrs, block_at, resume, overwrite, progress, inputs)


def _simulate_into(
    out: Path,
    fmt: str,
    n: int,
    chunk: int,
    attrs: dict[str, Any],
    block_at: Any,
    resume: bool,
    overwrite: bool,
    progress: bool,
    inputs: tuple[str | None, ...],
) -> Path:
    """The writing part of :func:`simulate_dataset`, under ``out``'s lock."""
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    resumable = resume and fmt == "zarr" and partial.exists() and ZarrWriter.reopen(partial)[1] > 0
    if resume and not resumable and fmt == "zarr" and is_ours(out):
        with open_dataset(out) as done:
            _check_same_run(out, done.attrs, attrs, n)
        print(f"{out} is already complete")
        return out
    check_output(out, overwrite=overwrite, inputs=inputs)
    if fmt != "zarr":
        blocks = [block_at(start) for start in _steps(n, 0, chunk, progress)]
        arrays = {key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]}
        return write_dataset(out, arrays, attrs)

    writer, done = None, 0
    if resumable:
        writer, done = ZarrWriter.reopen(partial)
        _check_same_run(partial, writer.group.attrs, attrs, n)
        print(f"resuming {out}: {done} of {n} samples already written")
    elif (partial / "zarr.json").is_file():
        remove_tree(partial)  # our own hidden partial store of an earlier run (named after out)
    else:
        remove(partial)
    for start in _steps(n, done, chunk, progress):
        block = block_at(start)
        if writer is None:
            writer = ZarrWriter(partial, n_total=n, arrays_like=block, attrs=attrs)
        writer.write(start, block)
    replace(partial, out)
    with open_dataset(out):
        pass  # refuse to report success on a store we cannot read back
    return out


def _steps(n: int, start: int, chunk: int, progress: bool):
    starts = range(start, n, max(1, chunk))
    if not progress:
        return starts
    from rich.progress import track

    return track(starts, description="simulating", total=len(starts))


def _group_names() -> list[str]:
    return list(STYLES)


def _check_same_run(path: Path, stored: Any, attrs: dict[str, Any], n: int) -> None:
    """Refuse to resume a store made by a different command (other seed, size or physics)."""
    if int(stored.get("n_total", -1)) != n:
        raise DataError(f"{path}: cannot resume: it was started with --n {stored.get('n_total')}, not {n}")
    for key in ("seed", "sim_config", "ray_tracing", "geometry"):
        if _normalise(stored.get(key)) != _normalise(attrs.get(key)):
            raise DataError(
                f"{path}: cannot resume: it was started with a different {key}; give --overwrite to restart"
            )


def _normalise(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def calibrate_dataset(
    path: str | os.PathLike[str],
    config: SimConfig | None = None,
    max_samples: int | None = None,
    fit_floor: bool = False,
    draws: int = 16,
    seed: int = 0,
) -> Calibration:
    """Calibrate the fast simulator against the ray-traced dataset at ``path`` (it needs ``heights`` and
    ``tx_pos``), on its first ``max_samples`` samples (default: all); see tomoformer.sim.calibrate.calibrate_arrays
    for ``config``, ``fit_floor``, ``draws`` and ``seed``."""
    with open_dataset(path) as ds:
        for key in ("heights", "tx_pos"):
            if key not in ds.arrays:
                raise DataError(f"{path}: calibration needs the '{key}' array (ray-traced data from `simulate`)")
        n = len(ds) if max_samples is None else min(len(ds), max_samples)
        if n < 1:
            raise DataError(f"{path}: no samples to calibrate on")
        attrs = dict(ds.attrs)
        tx_pos = ds.read("tx_pos", slice(0, n)).astype(np.float32)
        heights = ds.read("heights", slice(0, n)).astype(np.float32)
        signals = ds.read("signals", slice(0, n)).astype(np.float32)
    return calibrate_arrays(heights, tx_pos, signals, attrs, config, fit_floor, draws, seed, source=str(path))
