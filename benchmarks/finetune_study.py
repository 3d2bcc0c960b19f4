"""The README's fine-tuning study, end to end and over several seeds: which policy wins on a shifted domain.

Pretrain ``tomoformer_tiny`` on the fast simulator's defaults (320 mixed-style 48x48 cities, T = 16, 10 epochs),
then run ``tomoformer finetune-study`` on a shifted downstream domain (``configs/sim_downstream.yaml``: 28 GHz,
20 dB walls, 3 dB noise, old-town cities only) once per seed of ``--seeds`` (the seed draws the training subsets,
the batch order, the augmentation and the initialisation of ``scratch``; the data stay the same). Every policy
and ``scratch`` gets the same budget (``--max-steps`` optimiser steps of ``--batch-size``); each run keeps the
checkpoint with the best IoU on the downstream *validation* cities (checked every ``--val-every-steps`` steps),
and that checkpoint is scored on separate downstream *test* cities, which take part in no choice. The study's
``none`` row is the pretrained model scored unchanged.

Writes under ``--out``: the stores, ``runs/pre_tomo`` (the pretrained run), ``study_s<seed>/`` (each study's
``results.csv``, ``summary.md`` and figures), and over all seeds ``results.csv`` and ``results.md`` (test IoU mean ±
sample standard deviation per policy and size). Every step is resumable: run the same command again to continue.

    OMP_NUM_THREADS=1 python benchmarks/finetune_study.py --seeds 0,1,2 --out runs/finetune_study
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path
from typing import Any

from accuracy import write_csv
from tomoformer.cli import main as tomoformer
from tomoformer.outputs import write_recorded

DOWNSTREAM_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sim_downstream.yaml"
POLICIES = "full,head,freeze:2,llrd:0.75,lora:8,lp-ft"


def run(argv: list[str]) -> None:
    """One ``tomoformer`` command; stop the benchmark on its failure."""
    code = tomoformer(argv)
    if code != 0:
        raise SystemExit(f"finetune_study: 'tomoformer {' '.join(argv)}' failed with exit code {code}")


def prepare(out: Path, args: argparse.Namespace) -> Path:
    """The stores and the pretrained model (each step skipped when already complete); the pretrained checkpoint."""
    shape = ["--size", "48", "--frames", "16", "--resume"]
    run(["simulate", "--out", str(out / "sim/train.zarr"), "--n", "320", *shape, "--style", "mixed", "--seed", "0"])
    run(["simulate", "--out", str(out / "sim/val.zarr"), "--n", "64", *shape, "--style", "mixed", "--seed", "10000"])
    for split, n, seed in (("down_train", args.n_train, 1), ("down_val", 96, 2), ("down_test", 128, 3)):
        config = ["--config", str(DOWNSTREAM_CONFIG)]
        run(["simulate", *config, *shape, "--n", str(n), "--seed", str(seed), "--out", str(out / f"{split}.zarr")])
    pre = out / "runs" / "pre_tomo"
    data = ["--data", str(out / "sim/train.zarr"), "--val-data", str(out / "sim/val.zarr")]
    budget = ["--max-epochs", "10", "--batch-size", "16", "--lr", "1e-3", "--seed", "0"]
    run(["train", *data, "--model", "tomoformer_tiny", *budget, "--out", str(pre), "--resume"])
    return pre / "checkpoints" / "best.ckpt"


def study(out: Path, checkpoint: Path, seed: int, args: argparse.Namespace) -> Path:
    folder = out / f"study_s{seed}"
    data = ["--data", str(out / "down_train.zarr"), "--val-data", str(out / "down_val.zarr")]
    data += ["--test-data", str(out / "down_test.zarr")]
    budget = ["--max-steps", str(args.max_steps), "--batch-size", str(args.batch_size)]
    budget += ["--val-every-steps", str(args.val_every_steps), "--seed", str(seed)]
    grid = ["--sizes", args.sizes, "--policies", args.policies]
    run(["finetune-study", "--from", str(checkpoint), *data, *grid, *budget, "--out", str(folder), "--resume"])
    return folder / "results.csv"


def aggregate(paths: list[Path]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over the seeds' ``results.csv`` per (policy, size)."""
    groups: dict[tuple[str, int], list[dict[str, str]]] = {}
    for path in paths:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                groups.setdefault((row["policy"], int(row["size"])), []).append(row)
    rows: list[dict[str, Any]] = []
    for (policy, size), runs in groups.items():
        test = [float(r["test_iou"]) for r in runs]
        rows.append(
            {
                "policy": policy,
                "size": size,
                "seeds": len(runs),
                "trainable_params": int(runs[0]["trainable_params"]),
                "total_params": int(runs[0]["total_params"]),
                "val_iou_mean": statistics.fmean(float(r["val_iou"]) for r in runs),
                "test_iou_mean": statistics.fmean(test),
                "test_iou_std": statistics.stdev(test) if len(test) > 1 else 0.0,
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    sizes = sorted({int(r["size"]) for r in rows if int(r["size"]) > 0})
    policies = list(dict.fromkeys(str(r["policy"]) for r in rows))
    cell = {(str(r["policy"]), int(r["size"])): r for r in rows}
    seeds = max(int(r["seeds"]) for r in rows)
    lines = [
        f"Command: `{command}`",
        "",
        f"Test IoU of the best-validation checkpoint, mean ± sd over {seeds} seeds (validation IoU in brackets).",
        "",
        "| policy | trainable params | " + " | ".join(f"n={s}" for s in sizes) + " |",
        "|---|---|" + "---|" * len(sizes),
    ]
    for policy in policies:
        if (policy, 0) in cell:  # the pretrained model, unchanged: one value for every size
            r = cell[(policy, 0)]
            value = f"{r['test_iou_mean']:.3f} ({r['val_iou_mean']:.3f})"
            lines.append("| no fine-tuning | 0 | " + " | ".join(value for _ in sizes) + " |")
            continue
        first = cell[(policy, sizes[0])]
        share = int(first["trainable_params"]) / int(first["total_params"])
        values = [
            f"{cell[(policy, s)]['test_iou_mean']:.3f} ± {cell[(policy, s)]['test_iou_std']:.3f} "
            f"({cell[(policy, s)]['val_iou_mean']:.3f})"
            if (policy, s) in cell
            else "-"
            for s in sizes
        ]
        lines.append(f"| {policy} | {int(first['trainable_params']):,} ({share:.1%}) | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/finetune_study"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sizes", default="16,48,160", help="downstream training-set sizes")
    parser.add_argument("--policies", default=POLICIES)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--val-every-steps", type=int, default=20)
    args = parser.parse_args()
    args.n_train = max(int(s) for s in args.sizes.split(","))

    checkpoint = prepare(args.out, args)
    paths = [study(args.out, checkpoint, int(seed), args) for seed in args.seeds.split(",")]
    rows = aggregate(paths)
    write_csv(args.out / "results.csv", rows)
    command = (
        f"python benchmarks/finetune_study.py --seeds {args.seeds} --sizes {args.sizes} --policies {args.policies} "
        f"--max-steps {args.max_steps} --batch-size {args.batch_size} --val-every-steps {args.val_every_steps}"
    )
    table = markdown(rows, command)
    write_recorded(args.out / "results.md", table, command="benchmarks/finetune_study.py")
    print(table)


if __name__ == "__main__":
    main()
