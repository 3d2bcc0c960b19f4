"""``tomoformer data info|validate|convert|merge|show|morphology``: look at, check and convert dataset files."""

from __future__ import annotations

import argparse
import json
import sys

from tomoformer.cli.common import add_overwrite_flag, non_negative_int
from tomoformer.data.format import convert, info, open_dataset, validate
from tomoformer.errors import DataError


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("data", help="inspect, validate, convert and plot datasets")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    q = sub.add_parser("info", help="shapes, dtypes, value ranges, NaN and building fractions")
    q.add_argument("path")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.set_defaults(handler=run_info)

    q = sub.add_parser(
        "validate",
        help="read every chunk (checksums, missing chunks) and check every value; exit 0 if valid, else list the "
        "problems and exit 2",
    )
    q.add_argument("path")
    q.add_argument("--quick", action="store_true", help="check metadata, structure and chunk listing only")
    q.set_defaults(handler=run_validate)

    q = sub.add_parser("convert", help="convert between .zarr, .npz and .h5")
    q.add_argument("src")
    q.add_argument("dst")
    q.add_argument("--dtype", choices=["float16", "float32"], help="store signals in this dtype")
    add_overwrite_flag(q)
    q.set_defaults(handler=run_convert)

    q = sub.add_parser("merge", help="concatenate datasets of the same T, H, W and cell size into one")
    q.add_argument("sources", nargs="+", help="two or more datasets, or all the shards of one simulate run, in order")
    q.add_argument("--out", required=True, help="merged dataset (.zarr, .npz, .h5)")
    add_overwrite_flag(q)
    q.set_defaults(handler=run_merge)

    q = sub.add_parser("show", help="plot one sample: building map and a few signal frames")
    q.add_argument("path")
    q.add_argument("--index", type=non_negative_int, default=0)
    q.add_argument("--out", default="sample.png")
    add_overwrite_flag(q)
    q.set_defaults(handler=run_show)

    from tomoformer.cli import morphology_cmd

    morphology_cmd.register(sub)  # data morphology

    from tomoformer.cli import data_import_cmd

    data_import_cmd.register(sub)  # data import radiomapseer


def run_info(args: argparse.Namespace) -> int:
    summary = info(args.path)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['path']} ({summary['format']})", show_header=True)
    table.add_column("array")
    table.add_column("shape")
    table.add_column("dtype")
    for key, meta in summary["arrays"].items():
        table.add_row(key, str(meta["shape"]), meta["dtype"])
    console = Console()
    console.print(table)
    lo, hi = summary["signals_min_db"], summary["signals_max_db"]
    lines = [
        f"samples N={summary['n_samples']}, frames T={summary['frames']}, grid {summary['height']}x{summary['width']}",
        f"signals: {_fmt(lo)} .. {_fmt(hi)} dB, mean {_fmt(summary['signals_mean_db'])} dB, "
        f"NaN fraction {summary['signals_nan_fraction']:.3f}",
    ]
    if "building_fraction" in summary:
        lines.append(f"building fraction {summary['building_fraction']:.3f}")
    if "groups" in summary:
        names = summary["attrs"].get("group_names") or []
        counts = {(names[g] if 0 <= g < len(names) else g): c for g, c in summary["groups"].items()}
        lines.append(f"groups {counts}")
    attrs = {k: v for k, v in summary["attrs"].items() if k not in ("sim_config", "group_names")}
    lines.append(f"attrs {attrs}")
    for line in lines:
        console.print(line, highlight=False)
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("validate"), BarColumn(), DownloadColumn(), TimeRemainingColumn())  # bytes decoded
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("validate", total=None)
        problems = validate(
            args.path, quick=args.quick, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 2
    print(f"{args.path}: valid" + (" (metadata and chunk listing only: --quick)" if args.quick else ""))
    _report_checksums(args.path)
    return 0


def _report_checksums(path: str) -> None:
    """Say so when a valid store's arrays carry no checksums: a corrupted byte there cannot be detected."""
    from tomoformer.data.format import open_dataset
    from tomoformer.data.integrity import unchecksummed_arrays

    with open_dataset(path) as dataset:
        missing = unchecksummed_arrays(dataset)
    if missing:
        print(
            f"{path}: note: array(s) {', '.join(missing)} carry no checksums, so corruption there cannot be "
            "detected; `tomoformer data convert` rewrites the store with checksums"
        )


def run_convert(args: argparse.Namespace) -> int:
    from tomoformer.outputs import claim_output

    with claim_output(args.dst, overwrite=args.overwrite, command="data convert", inputs=(args.src,), option="dst"):
        out = convert(args.src, args.dst, dtype=args.dtype)
    print(f"wrote {out}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from tomoformer.data.merge import merge_datasets
    from tomoformer.outputs import claim_output

    with claim_output(args.out, overwrite=args.overwrite, command="data merge", inputs=args.sources):
        out, groups = merge_datasets(args.sources, args.out)
    print(f"wrote {out} ({len(args.sources)} datasets, groups {groups})")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from tomoformer.outputs import claim_output

    with claim_output(args.out, overwrite=args.overwrite, command="data show", inputs=(args.path,)):
        return _show(args)


def _show(args: argparse.Namespace) -> int:
    from tomoformer.evaluation.figures import sample_figure, save_figure

    with open_dataset(args.path) as dataset:
        n = len(dataset)
        if not 0 <= args.index < n:
            raise DataError(f"{args.path}: --index {args.index} is out of range (the dataset has {n} samples)")
        sample = dataset.sample(args.index)
    figure = sample_figure(
        signals=sample["signals"].astype("float32"),
        tx_pos=sample.get("tx_pos"),
        buildings=sample.get("buildings"),
        probabilities=None,
        title=f"{args.path} [{args.index}]",
    )
    save_figure(figure, args.out)
    print(f"wrote {args.out}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"
