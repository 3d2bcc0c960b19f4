"""``tomoformer data import radiomapseer DIR --out X.zarr``: third-party datasets into our format."""

from __future__ import annotations

import argparse

from tomoformer.cli.common import add_overwrite_flag


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``import`` to the ``data`` subcommands."""
    p = sub.add_parser("import", help="convert a third-party dataset (RadioMapSeer) into our format")
    kinds = p.add_subparsers(dest="import_kind", metavar="KIND", required=True)
    q = kinds.add_parser(
        "radiomapseer",
        help="a RadioMapSeer tree (png/buildings_complete, gain/{DPM,IRT2,IRT4,...}, png/antennas)",
        description="Each sample is one map seen from --frames transmitters: path gain in dB (8-bit PNG, -186 dB "
        "at 0 to -47 dB at 255; 0 = nothing received or inside a building becomes NaN), buildings from "
        "png/buildings_complete, tx_pos from the antenna images. 1 m cells, 5.9 GHz.",
    )
    q.add_argument("root", metavar="DIR", help="the RadioMapSeer folder (holding gain/ and png/)")
    q.add_argument("--out", required=True, help="output dataset (.zarr streams sample by sample; .npz, .h5)")
    q.add_argument("--simulation", default="DPM", help="gain folder: DPM, IRT2, IRT4, carsDPM, carsIRT2, carsIRT4")
    q.add_argument("--maps", default=None, help="map numbers and ranges, e.g. 0-99,150 (default: every map)")
    q.add_argument("--frames", type=int, default=80, help="transmitters per sample (T)")
    q.add_argument("--samples-per-map", type=int, default=1, help="samples per map, disjoint transmitter sets")
    q.add_argument("--tx-height-m", type=float, default=1.5, help="transmitter height stored in tx_pos")
    q.add_argument("--seed", type=int, default=0, help="draw of the transmitters when not all are used")
    q.add_argument("--no-progress", dest="progress", action="store_false")
    add_overwrite_flag(q)
    q.set_defaults(handler=run_radiomapseer)


def run_radiomapseer(args: argparse.Namespace) -> int:
    from tomoformer.data.radiomapseer import RadioMapSeerOptions, import_radiomapseer, parse_maps
    from tomoformer.errors import ConfigError
    from tomoformer.outputs import claim_output

    if not 0 <= args.tx_height_m < 1000:
        raise ConfigError(f"--tx-height-m {args.tx_height_m}: expected metres in [0, 1000)")
    options = RadioMapSeerOptions(
        simulation=args.simulation,
        maps=parse_maps(args.maps) if args.maps else None,
        frames=args.frames,
        samples_per_map=args.samples_per_map,
        tx_height_m=args.tx_height_m,
        seed=args.seed,
    )
    progress = None
    if args.progress:
        from rich.progress import track

        def progress(items):
            return track(items, description="importing")

    with claim_output(args.out, overwrite=args.overwrite, command="data import radiomapseer", inputs=(args.root,)):
        out, n, seconds = import_radiomapseer(args.root, args.out, options, progress)
    print(f"wrote {n} samples to {out} in {seconds:.1f} s")
    return 0
