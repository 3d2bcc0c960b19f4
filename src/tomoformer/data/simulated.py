"""Simulated datasets on disk: ``simulate_dataset`` writes (resumable, chunk by chunk) what the simulators make,
``calibrate_dataset`` fits the fast simulator to a stored ray-traced dataset.

The simulators (tomoformer.sim) take configs and arrays; this module is where their output meets the store
formats (tomoformer.data.format) and the output policy (tomoformer.outputs).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.data.format import ZarrWriter, dataset_format, open_dataset, write_dataset
from tomoformer.data.shards import SHARD_ATTR, Shard
from tomoformer.errors import ConfigError, DataError, OutputError
from tomoformer.io import is_empty_dir, is_ours, remove, replace, wholly_ours
from tomoformer.outputs import check_not_input, check_output, output_lock
from tomoformer.sim import STYLES, SimConfig, dataset_attrs, simulate_samples
from tomoformer.sim.calibrate import Calibration, calibrate_arrays


def partial_path(out: Path) -> Path:
    """The hidden name beside ``out`` under which simulate fills a Zarr store before renaming it to ``out``."""
    return out.with_name(f".{out.stem}.partial{out.suffix}")


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
    shard: Shard | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """Simulate ``n`` samples into ``out``. A Zarr store is filled under a hidden ``.partial`` name and renamed
    when complete; ``resume`` continues such a partial store where it stopped. With ``ray_options``
    (tomoformer.sim.sionna.RayOptions) the samples are ray traced with Sionna RT, of ``scene`` if given. With
    ``geometry`` (a tomoformer.sim.HeightTiles such as tomoformer.geometry.source.GeometrySource) sample i stands
    on its tile i mod N, and the dataset carries the geometry's attributes (its ``dataset_attrs()``).

    With ``shard`` (tomoformer.data.shards.Shard) only its block ``[I*n//N, (I+1)*n//N)`` of the ``n`` samples is
    written, each sample exactly as in the whole dataset (it depends only on the seed and its global index), and
    the store records the block (attribute ``shard``); ``data merge`` of all N shards in order gives the whole
    dataset. ``on_progress(k)`` is called with the number of samples in ``out`` so far, after each block.

    ``out`` follows the output policy (tomoformer.outputs): an existing output needs ``overwrite`` (and is never a
    folder we did not write), and one ``simulate`` at a time writes it (``out.lock``)."""
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    first, stop = shard.bounds(n) if shard is not None else (0, n)
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
    if shard is not None:
        attrs[SHARD_ATTR] = shard.attrs(n)

    def block_at(start: int) -> dict[str, np.ndarray]:
        # ``start`` counts the samples of this store; the simulators take the sample's index in the whole dataset.
        count, index = min(chunk, stop - first - start), first + start
        if ray_options is not None:
            block = sionna_samples(config, seed, index, count, device, ray_options, scene, geometry)
        else:
            block = simulate_samples(config, seed, index, count, device, geometry=geometry)
        # float16 halves the store; its 0.03-0.1 dB steps are far below the simulated noise.
        block["signals"] = block["signals"].astype(np.float16)
        return block

    if resume and overwrite:
        raise ConfigError("give --resume or --overwrite, not both")
    check_not_input(out, inputs)
    with output_lock(out, "simulate"):
        return _simulate_into(
            out, fmt, stop - first, chunk, attrs, block_at, resume, overwrite, progress, inputs, on_progress
        )


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
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """The writing part of :func:`simulate_dataset`, under ``out``'s lock; ``n`` samples of this store."""
    report = on_progress or (lambda done: None)
    partial = partial_path(out)
    # An empty folder there is what a kill between creating our partial store and its first write leaves.
    if os.path.lexists(partial) and not (wholly_ours(partial) or is_empty_dir(partial)):
        raise OutputError(f"{partial}: exists and tomoformer did not write it; move it away (simulate's temporary)")
    resumable = resume and fmt == "zarr" and (partial / "zarr.json").is_file() and ZarrWriter.reopen(partial)[1] > 0
    if resume and not resumable and fmt == "zarr" and is_ours(out):
        with open_dataset(out) as done:
            _check_same_run(out, done.attrs, attrs, n)
        print(f"{out} is already complete")
        report(n)
        return out
    check_output(out, overwrite=overwrite, inputs=inputs)
    if fmt != "zarr":
        blocks = []
        for start in _steps(n, 0, chunk, progress):
            blocks.append(block_at(start))
            report(start + len(blocks[-1]["signals"]))
        arrays = {key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]}
        return write_dataset(out, arrays, attrs)

    writer, done = None, 0
    if resumable:
        writer, done = ZarrWriter.reopen(partial)
        _check_same_run(partial, writer.group.attrs, attrs, n)
        print(f"resuming {out}: {done} of {n} samples already written")
        report(done)
    else:
        remove(partial)  # our own hidden partial store of an earlier run (its stamp says so), if any
    for start in _steps(n, done, chunk, progress):
        block = block_at(start)
        if writer is None:
            writer = ZarrWriter(partial, n_total=n, arrays_like=block, attrs=attrs)
        writer.write(start, block)
        report(start + len(block["signals"]))
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
    for key in ("seed", "sim_config", "ray_tracing", "geometry", SHARD_ATTR):
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
