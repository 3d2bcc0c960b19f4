"""``tomoformer demo``: the whole job on the CPU in minutes: simulate, train TomoFormer and baselines, compare."""

from __future__ import annotations

import argparse
import dataclasses

from tomoformer.cli.common import add_overwrite_flag, positive_float, positive_int, seed_value
from tomoformer.tasks.demo import DEMO_FITTED, DEMO_MODELS, FULL_DEMO, DemoOptions, run_demo

QUICK = DemoOptions()


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("demo", help="simulate, train TomoFormer and the baselines on the CPU, compare them")
    p.add_argument("--out", default="runs/demo")
    p.add_argument(
        "--full",
        action="store_true",
        help=f"the longer demo: {', '.join(FULL_DEMO.models)}; {FULL_DEMO.n_train} training areas, "
        f"T={FULL_DEMO.frames}, {FULL_DEMO.base_epochs} epochs (default: {', '.join(QUICK.models)}; "
        f"{QUICK.n_train} areas, T={QUICK.frames}, {QUICK.base_epochs} epochs); the flags below override either",
    )
    p.add_argument("--n-train", type=positive_int, help=f"training areas (default {QUICK.n_train})")
    p.add_argument("--n-test", type=positive_int, help=f"test areas (default {QUICK.n_test})")
    p.add_argument("--size", type=positive_int, help=f"map size in cells of 2 m (default {QUICK.size})")
    p.add_argument("--frames", type=positive_int, help=f"T, signal maps per area (default {QUICK.frames})")
    p.add_argument("--epochs", type=positive_float, default=1.0, help="scale every learned model's epoch budget")
    p.add_argument(
        "--models",
        help=f"comma-separated demo models, of {','.join([*DEMO_MODELS, *DEMO_FITTED])} "
        f"(default {','.join(QUICK.models)}; with --full all of them)",
    )
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    add_overwrite_flag(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    base = FULL_DEMO if args.full else QUICK
    sizes = {k: getattr(args, k) for k in ("n_train", "n_test", "size", "frames") if getattr(args, k) is not None}
    if args.models is not None:
        sizes["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
    options = dataclasses.replace(
        base,
        **sizes,
        out=args.out,
        epochs=args.epochs,
        seed=args.seed,
        progress=args.progress,
        overwrite=args.overwrite,
    )
    run_demo(options)
    return 0
