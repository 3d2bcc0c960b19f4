"""``tomoformer demo``: the whole job on the CPU in minutes: simulate, train TomoFormer and baselines, compare."""

from __future__ import annotations

import argparse

from tomoformer.cli.common import add_overwrite_flag, positive_float, positive_int, seed_value
from tomoformer.tasks.demo import DEMO_FITTED, DEMO_MODELS, DemoOptions, run_demo


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("demo", help="simulate, train TomoFormer and the baselines on the CPU, compare them")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--n-train", type=positive_int, default=320)
    p.add_argument("--n-test", type=positive_int, default=64)
    p.add_argument("--size", type=positive_int, default=48, help="map size in cells (2 m each)")
    p.add_argument("--frames", type=positive_int, default=16)
    p.add_argument("--epochs", type=positive_float, default=1.0, help="scale every model's epoch budget")
    p.add_argument(
        "--models",
        default=",".join([*DEMO_MODELS, *DEMO_FITTED]),
        help="comma-separated subset of the demo models",
    )
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    add_overwrite_flag(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    options = DemoOptions(
        out=args.out,
        n_train=args.n_train,
        n_test=args.n_test,
        size=args.size,
        frames=args.frames,
        epochs=args.epochs,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        seed=args.seed,
        progress=args.progress,
        overwrite=args.overwrite,
    )
    run_demo(options)
    return 0
