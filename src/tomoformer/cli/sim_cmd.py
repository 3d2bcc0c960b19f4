"""``tomoformer sim calibrate``: fit the fast simulator's losses and shadowing to ray-traced maps."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from tomoformer.cli.common import add_overwrite_flag, positive_int, seed_value
from tomoformer.errors import ConfigError
from tomoformer.io import write_text_atomic
from tomoformer.outputs import check_not_input, claim_output


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("sim", help="simulator tools: calibrate the fast simulator against ray tracing")
    sub = p.add_subparsers(dest="sim_command", metavar="ACTION", required=True)
    q = sub.add_parser(
        "calibrate",
        help="fit wall loss, indoor loss and shadowing to a ray-traced dataset; write a SimConfig YAML",
    )
    q.add_argument("--data", required=True, help="ray-traced dataset (simulate --engine sionna)")
    q.add_argument("--out", required=True, help="calibrated SimConfig YAML to write")
    q.add_argument("--config", metavar="YAML", help="starting SimConfig (default: the dataset's sim_config)")
    q.add_argument(
        "--defaults", action="store_true", help="start from SimConfig's defaults instead of the dataset's sim_config"
    )
    q.add_argument("--max-samples", type=positive_int, default=None, help="use the first N samples only")
    q.add_argument("--fit-floor", action="store_true", help="also set floor_db to match the missing-cell fraction")
    q.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    q.add_argument(
        "--draws", type=int, default=16, help="physics draws per tile for the distribution comparison (0: skip it)"
    )
    q.add_argument("--seed", type=seed_value, default=0, help="seed of the fast simulator's draws")
    add_overwrite_flag(q)
    q.set_defaults(handler=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tomoformer.data.simulated import calibrate_dataset
    from tomoformer.sim.config import SimConfig

    if args.max_samples is not None and args.max_samples < 1:
        raise ConfigError(f"--max-samples must be >= 1, got {args.max_samples}")
    if args.draws < 0:
        raise ConfigError(f"--draws must be >= 0, got {args.draws}")
    if args.defaults and args.config:
        raise ConfigError("give --config or --defaults, not both")
    start = SimConfig.from_yaml(args.config) if args.config else SimConfig() if args.defaults else None
    inputs = (args.data, args.config)
    check_not_input(args.out, [*inputs, args.json])
    with (
        claim_output(args.out, overwrite=args.overwrite, command="sim calibrate", inputs=inputs),
        claim_output(args.json, overwrite=args.overwrite, command="sim calibrate", inputs=inputs, option="--json"),
    ):
        result = calibrate_dataset(args.data, start, args.max_samples, args.fit_floor, args.draws, args.seed)
        write_text_atomic(Path(args.out), yaml.safe_dump(result.config.to_dict(), sort_keys=False))
        if args.json:
            write_text_atomic(Path(args.json), json.dumps(result.to_dict(), indent=2) + "\n")

    table = Table(title=f"fast simulator vs ray tracing, {result.n_cells} cells with both values")
    for column in ("", "RMSE dB", "MAE dB", "bias dB"):
        table.add_column(column, justify="right" if column else "left")
    for name, stats in (("before", result.before), ("after", result.after)):
        table.add_row(name, *(f"{stats[k]:.2f}" for k in ("rmse_db", "mae_db", "bias_db")))
    console = Console()
    console.print(table)
    if result.distributions:
        console.print(_distribution_table(result.distributions, Table))
    fitted = result.to_dict()["fitted"]
    console.print(", ".join(f"{k}={v}" for k, v in fitted.items()))
    print(f"wrote {args.out}")
    return 0


def _distribution_table(distributions: dict, table_cls: type) -> object:
    """Ray tracer vs fast simulator (median [min, max] over the physics draws) for each statistic."""
    start = distributions["start"]
    table = table_cls(title=f"distributions: ray tracer vs fast simulator ({start['draws']} physics draws per tile)")
    for column in ("statistic", "ray tracer", "fast: start", "bracketed", "fast: calibrated"):
        table.add_column(column, justify="left" if column == "statistic" else "right")

    def cell(summary: dict) -> str:
        return f"{summary['median']:.2f} [{summary['min']:.2f}, {summary['max']:.2f}]"

    calibrated = distributions["calibrated"]
    names = {
        "indoor_minus_outdoor_db": "indoor-outdoor dB",
        "shadowed_minus_lit_outdoor_db": "shadow-lit dB",
        "empty_indoor": "empty, indoor",
        "empty_outdoor": "empty, outdoor",
    }
    for key, label in names.items():
        table.add_row(
            label,
            f"{start['ray_tracer'][key]:.2f}",
            cell(start["fast"][key]),
            "yes" if start["bracketed"][key] else "no",
            cell(calibrated["fast"][key]),
        )
    table.add_row("cell RMSE dB", "", cell(start["rmse_db"]), "", cell(calibrated["rmse_db"]))
    return table
