"""``tomoformer simulate``: procedural cities and their signal maps, written in chunks, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
from tomoformer.errors import ConfigError

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
    scale = p.add_argument_group("scaling out (docs/scale.md)")
    scale.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="write only shard I of N: samples [I*n//N, (I+1)*n//N), each as in the whole dataset; "
        "`data merge` of all N shards in order gives the whole dataset",
    )
    scale.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run the shards as Ray tasks on the cluster at ADDRESS (e.g. auto), or a local one without ADDRESS, "
        'then merge them into --out (pip install -e ".[scale]")',
    )
    scale.add_argument("--shards", type=positive_int, default=None, help="--ray: number of shards (the cluster's CPUs)")
    scale.add_argument(
        "--max-retries", type=non_negative_int, default=3, help="--ray: reruns of a failed shard task (3)"
    )
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
        from tomoformer.geometry.source import GeometrySource

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
    simulate_args = {
        "config": config,
        "seed": args.seed,
        "device": args.device,
        "chunk": args.chunk or (1 if ray_options else 32),
        "ray_options": ray_options,
        "scene": args.scene,
    }
    if args.ray is not None:
        return _run_ray(args, n, simulate_args)
    if args.shards is not None:
        raise ConfigError("--shards needs --ray (one process writes one shard: --shard I/N)")
    from tomoformer.data.shards import parse_shard
    from tomoformer.data.simulated import simulate_dataset

    shard = parse_shard(args.shard) if args.shard is not None else None
    path = simulate_dataset(
        Path(args.out),
        n=n,
        resume=args.resume,
        progress=args.progress,
        overwrite=args.overwrite,
        inputs=(args.config, args.geometry),
        geometry=geometry,
        shard=shard,
        **simulate_args,
    )
    if shard is not None:
        start, stop = shard.bounds(n)
        print(f"wrote shard {shard} (samples {start} to {stop - 1} of {n}) to {path}")
    else:
        print(f"wrote {n} samples to {path}")
    return 0


def _run_ray(args: argparse.Namespace, n: int, simulate_args: dict[str, Any]) -> int:
    """``--ray``: every shard in a Ray task, then one merged store."""
    import functools

    from tomoformer.data.ray_runner import simulate_with_ray

    if args.shard is not None:
        raise ConfigError("give --shard or --ray, not both (--ray runs all the shards)")
    geometry = None
    if args.geometry:
        from tomoformer.geometry.source import GeometrySource

        geometry = functools.partial(GeometrySource, args.geometry)  # opened in each task
    path = simulate_with_ray(
        Path(args.out),
        n=n,
        simulate_args=simulate_args,
        address=args.ray or None,
        shards=args.shards,
        max_retries=args.max_retries,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=args.progress,
        inputs=(args.config, args.geometry),
        geometry=geometry,
        gpus_per_task=1.0 if str(args.device).startswith("cuda") else 0.0,
    )
    print(f"wrote {n} samples to {path}")
    return 0
