"""``tomoformer demo``: the whole job on the CPU in minutes: simulate, train TomoFormer and baselines, compare."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from tomoformer.cli.common import add_overwrite_flag, positive_float, positive_int, seed_value
from tomoformer.io import write_text_atomic
from tomoformer.outputs import claim_output

# Learned models and their epochs; fitted baselines need no epochs. Sized for ~5 minutes on 2 CPU cores.
# The same epochs and learning rate for every learned model (a fair comparison, issue 18); the user's design at the
# CPU preset of its widths, its dense head sized to the demo's maps.
DEMO_MODELS: dict[str, int] = {"tomoformer_tiny": 20, "unet": 20, "seednet_small": 20}
DEMO_LR = 1e-3
DEMO_FITTED = ("threshold", "rti")


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
    with claim_output(args.out, overwrite=args.overwrite, command="demo", folder=True):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from tomoformer.checkpoint import load_checkpoint
    from tomoformer.cli.simulate_cmd import simulate_dataset
    from tomoformer.errors import ConfigError
    from tomoformer.sim.config import SimConfig
    from tomoformer.tasks.evaluate import evaluate_models, print_table
    from tomoformer.tasks.train import TrainConfig, run_training

    start = time.perf_counter()
    out = Path(args.out)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(DEMO_MODELS) - set(DEMO_FITTED))
    if unknown:
        raise ConfigError(f"--models: not a demo model: {', '.join(unknown)}")
    config = SimConfig.from_dict({"size": args.size, "frames": args.frames, "style": "mixed"})
    data = out / "data"
    paths = {}
    for split, n, seed in (("train", args.n_train, args.seed), ("test", args.n_test, args.seed + 10_000)):
        paths[split] = data / f"{split}.zarr"
        print(f"simulating {n} {split} samples ({args.frames} maps of {args.size}x{args.size} cells)")
        simulate_dataset(paths[split], n=n, config=config, seed=seed, progress=args.progress, overwrite=args.overwrite)

    models = {}
    timings: dict[str, float] = {}
    epochs_run: dict[str, int] = {}
    for name in names:
        epochs = max(1, round(DEMO_MODELS.get(name, 1) * args.epochs))
        print(f"training {name}" + ("" if name in DEMO_FITTED else f" for {epochs} epochs"))
        if name not in DEMO_FITTED:
            epochs_run[name] = epochs
        train = TrainConfig(
            data=str(paths["train"]),
            out=str(out / "runs" / name),
            model=name,
            max_epochs=epochs,
            batch_size=16,
            model_kwargs={"img_size": args.size} if name.startswith("seednet") else {},
            lr=DEMO_LR,
            seed=args.seed,
            accelerator="cpu",
            progress=args.progress,
            overwrite=args.overwrite,
        )
        result = run_training(train)
        timings[name] = result.seconds
        checkpoint = out / "checkpoints" / f"{name}.ckpt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.best_checkpoint, checkpoint)
        models[name] = load_checkpoint(checkpoint).model

    results = evaluate_models(
        models,
        paths["test"],
        out,
        batch_size=16,
        device="cpu",
        title="TomoFormer demo: held-out simulated cities",
        notes=_notes(args, timings, epochs_run),
    )
    summary: dict[str, Any] = {
        name: {
            **{k: v for k, v in metrics.items() if k != "per_group"},
            "train_seconds": round(timings[name], 1),
        }
        for name, metrics in results.items()
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True))
    print_table(results)
    print(f"report: {out / 'report.html'}  summary: {out / 'summary.json'}  ({time.perf_counter() - start:.0f} s)")
    return 0


def _notes(args: argparse.Namespace, timings: dict[str, float], epochs: dict[str, int]) -> str:
    times = ", ".join(f"{k} {v:.0f} s" + (f" ({epochs[k]} epochs)" if k in epochs else "") for k, v in timings.items())
    return (
        f"Simulated mixed-style cities, {args.size}x{args.size} cells of 2 m, T={args.frames} maps per area; "
        f"{args.n_train} training areas (10% of them for validation), {args.n_test} held-out test areas. "
        f"Training time on the CPU: {times}."
    )
