"""``tomoformer data morphology DATA [DATA ...]``: what the cities of datasets look like, beside each other."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
from typing import Any

from tomoformer.cli.common import add_overwrite_flag
from tomoformer.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``morphology`` action to ``tomoformer data``."""
    q = sub.add_parser(
        "morphology",
        help="urban morphology of the building maps: coverage, built masses, courtyards, street orientation, "
        "distance to streets",
    )
    q.add_argument("paths", nargs="+", metavar="DATA", help="datasets with 'buildings' (.zarr, .npz, .h5)")
    q.add_argument("--json", metavar="OUT", help="write the statistics and per-tile values as JSON")
    q.add_argument("--figure", metavar="OUT.png", help="histograms of every measurement, datasets overlaid")
    q.add_argument("--by-group", action="store_true", help="one row per group (e.g. city style) of each dataset")
    add_overwrite_flag(q)
    q.set_defaults(handler=run_morphology)


def run_morphology(args: argparse.Namespace) -> int:
    from tomoformer.evaluation.morphology import dataset_morphology
    from tomoformer.outputs import claim_output

    if args.json and args.figure and os.path.abspath(args.json) == os.path.abspath(args.figure):
        raise ConfigError(f"--json and --figure name the same file {args.json}; give two paths")
    with contextlib.ExitStack() as stack:
        for out, option in ((args.json, "--json"), (args.figure, "--figure")):
            stack.enter_context(
                claim_output(out, overwrite=args.overwrite, command="data morphology", inputs=args.paths, option=option)
            )
        summaries = [s for path in args.paths for s in dataset_morphology(path, by_group=args.by_group)]
        _print_table([s.stats() for s in summaries])
        if args.json:
            from tomoformer.io import write_text_atomic

            doc = {"datasets": [{**s.stats(), "per_tile": s.per_tile()} for s in summaries]}
            write_text_atomic(args.json, json.dumps(_plain(doc), indent=1) + "\n")
            print(f"wrote {args.json}")
        if args.figure:
            from tomoformer.evaluation.figures import save_figure
            from tomoformer.evaluation.morphology_figure import morphology_figure

            save_figure(morphology_figure(summaries), args.figure)
            print(f"wrote {args.figure}")
    return 0


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="urban morphology of the 'buildings' tiles")
    table.add_column("dataset", overflow="fold")
    for name in (
        "tiles",
        "coverage\nmedian (min-max)",
        "built masses m²\nmedian / p90",
        "courtyards\nper tile, % area",
        "orientation spread °\ntile / grid angles",
        "to street m\nmedian / p90",
    ):
        table.add_column(name, no_wrap=True)
    for r in rows:
        table.add_row(
            escape(r["name"]),
            str(r["tiles"]),
            f"{_f(r['coverage_median'], 2)} ({_f(r['coverage_min'], 2)}-{_f(r['coverage_max'], 2)})",
            f"{_f(r['mass_area_median_m2'], 0, True)} / {_f(r['mass_area_p90_m2'], 0, True)}",
            f"{_f(r['courtyards_per_tile'], 1)}, {_f(100 * r['courtyard_share'], 1)}",
            f"{_f(r['orientation_spread_median_deg'], 1)} / {_f(r['grid_angle_spread_deg'], 1)}",
            f"{_f(r['street_distance_median_m'], 1)} / {_f(r['street_distance_p90_m'], 1)}",
        )
    console = Console()
    console.width = max(console.width, 120)  # a pipe reports 80 columns: keep one line per row
    console.print(table)


def _f(value: float, digits: int, thousands: bool = False) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:,.{digits}f}" if thousands else f"{value:.{digits}f}"


def _plain(value: Any) -> Any:
    """NaN -> None recursively, so that the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
