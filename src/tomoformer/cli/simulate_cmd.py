"""``tomoformer simulate``: procedural cities and their signal maps, written in chunks, resumable."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.cli.common import (
    add_config_flag,
    add_overwrite_flag,
    concrete_device_name,
    non_negative_int,
    parse_key_values,
    positive_int,
    read_yaml,
    seed_value,
)
from tomoformer.data.format import ZarrWriter, dataset_format, open_dataset, write_dataset
from tomoformer.errors import ConfigError, DataError
from tomoformer.io import _remove_tree, is_ours, remove, replace
from tomoformer.outputs import check_not_input, check_output, output_lock

# Flags that map one-to-one onto SimConfig fields (flag dest → field); others go through --set.
_FIELD_FLAGS = {
    "frames": int,
    "size": int,
    "cell_size_m": float,
    "frequency_hz": float,
    "style": str,
    "tx_mode": str,
    "measured_fraction": float,
    "sparsity_mode": str,
    "noise_std_db": "range",
    "floor_db": float,
    "wall_loss_db": "range",
    "indoor_loss_db_per_m": "range",
    "shadowing_std_db": "range",
    "canyon_probability": float,
}


def _range_flag(text: str) -> float | list[float]:
    """A physics flag: one value (``12``) or a per-sample range (``1,30``: low,high)."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or low,high, got {text!r}") from None
    if len(values) > 2:
        raise argparse.ArgumentTypeError(f"expected a number or low,high, got {text!r}")
    return values[0] if len(values) == 1 else values


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("simulate", help="simulate cities and signal maps into a dataset file")
    p.add_argument("--out", required=True, help="output dataset (.zarr, .npz, .h5)")
    p.add_argument(
        "--n", type=positive_int, default=None, help="number of samples (areas; 100, or with --geometry its tiles)"
    )
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--device", type=concrete_device_name, default="cpu", help="cpu or cuda")
    p.add_argument(
        "--chunk", type=positive_int, default=None, help="samples simulated and written per step (32; sionna: 1)"
    )
    p.add_argument("--resume", action="store_true", help="complete an interrupted run of the same command")
    add_overwrite_flag(p)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    for name, kind in _FIELD_FLAGS.items():
        kind = _range_flag if kind == "range" else kind
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=argparse.SUPPRESS)
    p.add_argument("--engine", choices=("fast", "sionna"), default="fast", help="sionna: ray tracing (slow)")
    p.add_argument("--scene", default=None, help="sionna only: tiles of a real city (munich, etoile, florence)")
    p.add_argument("--samples-per-tx", type=positive_int, default=1_000_000, help="sionna only: rays per transmitter")
    p.add_argument("--max-depth", type=non_negative_int, default=3, help="sionna only: interactions per ray")
    p.add_argument(
        "--geometry",
        default=None,
        metavar="STORE",
        help="heights of this store (tomoformer geometry import) instead of procedural cities; sample i uses "
        "tile i mod N (--n: first n, or cycling with new transmitters)",
    )
    p.add_argument("--material", default="mixed", help="sionna only: ITU material of buildings (mixed: drawn)")
    p.add_argument("--wall-thickness-m", type=float, default=0.3, help="sionna only: ITU slab thickness")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help="any other SimConfig field")
    add_config_flag(p)
    p.set_defaults(handler=run)


def sim_config_from_args(args: argparse.Namespace) -> Any:
    """SimConfig defaults < --config YAML < explicit flags < --set pairs."""
    from tomoformer.sim.config import SimConfig

    values: dict[str, Any] = read_yaml(args.config) if getattr(args, "config", None) else {}
    values.update({k: getattr(args, k) for k in _FIELD_FLAGS if hasattr(args, k)})
    values.update(parse_key_values(getattr(args, "overrides", None), "--set"))
    return SimConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    geometry = None
    if args.geometry:
        from tomoformer.sim.geometry_source import GeometrySource

        if args.scene:
            raise ConfigError("give --scene or --geometry, not both")
        geometry = GeometrySource(args.geometry)
        # The grid follows the tiles unless given (then it must match: GeometrySource.check_config).
        if not hasattr(args, "size"):
            args.size = geometry.shape[0]
        if not hasattr(args, "cell_size_m"):
            args.cell_size_m = float(geometry.attrs.get("cell_size_m", 2.0))
    config = sim_config_from_args(args)
    if geometry is not None:
        geometry.check_config(config)
    n = args.n or (len(geometry) if geometry is not None else 100)
    if args.scene and args.engine != "sionna":
        raise ConfigError("--scene needs --engine sionna")
    ray_options = None
    if args.engine == "sionna":
        from tomoformer.sim.sionna import RayOptions

        if args.samples_per_tx < 1 or args.max_depth < 0:
            raise ConfigError("--samples-per-tx must be >= 1 and --max-depth >= 0")
        ray_options = RayOptions(
            samples_per_tx=args.samples_per_tx,
            max_depth=args.max_depth,
            wall_thickness_m=args.wall_thickness_m,
            building_material=args.material,
        )
    elif args.material != "mixed" or args.wall_thickness_m != 0.3:
        raise ConfigError("--material and --wall-thickness-m need --engine sionna")
    path = simulate_dataset(
        Path(args.out),
        n=n,
        config=config,
        seed=args.seed,
        device=args.device,
        chunk=args.chunk or (1 if ray_options else 32),
        resume=args.resume,
        progress=args.progress,
        ray_options=ray_options,
        scene=args.scene,
        overwrite=args.overwrite,
        inputs=(args.config, args.geometry),
        geometry=geometry,
    )
    print(f"wrote {n} samples to {path}")
    return 0


def simulate_dataset(
    out: Path,
    n: int,
    config: Any,
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
    ``geometry`` (tomoformer.sim.geometry_source.GeometrySource) sample i stands on its tile i mod N.

    ``out`` follows the output policy (tomoformer.outputs): an existing output needs ``overwrite`` (and is never a
    folder we did not write), and one ``simulate`` at a time writes it (``out.lock``)."""
    from tomoformer.sim.simulate import dataset_attrs, simulate_samples

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
        _remove_tree(partial)  # our own hidden partial store of an earlier run (named after out)
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
    from tomoformer.sim.cities import STYLES

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
    import json

    return json.loads(json.dumps(value, sort_keys=True, default=str))
