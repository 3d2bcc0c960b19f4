"""``tomoformer sim calibrate``: fit the fast simulator's losses and shadowing to ray-traced maps."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from tomoformer.errors import ConfigError
from tomoformer.io import write_text_atomic


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
    q.add_argument("--max-samples", type=int, default=None, help="use the first N samples only")
    q.add_argument("--fit-floor", action="store_true", help="also set floor_db to match the missing-cell fraction")
    q.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    q.set_defaults(handler=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tomoformer.sim.calibrate import calibrate_dataset
    from tomoformer.sim.config import SimConfig

    if args.max_samples is not None and args.max_samples < 1:
        raise ConfigError(f"--max-samples must be >= 1, got {args.max_samples}")
    start = SimConfig.from_yaml(args.config) if args.config else None
    result = calibrate_dataset(args.data, start, args.max_samples, args.fit_floor)
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
    fitted = result.to_dict()["fitted"]
    console.print(", ".join(f"{k}={v}" for k, v in fitted.items()))
    print(f"wrote {args.out}")
    return 0
