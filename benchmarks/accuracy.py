"""Accuracy benchmark: every model with the same data, epochs and tuning budget, over several seeds, scored on
held-out simulated cities.

Two scenarios on mixed-style cities (2 m cells): ``dense`` (every cell of every frame measured) and ``sparse``
(10 % of the cells per frame, 4 dB noise, a receiver floor at -130 dB). Each scenario simulates its own train,
validation and test cities (seeds ``--data-seed``, +20,000 and +10,000). For every learned model the learning
rate is chosen the same way: each rate of ``--lrs`` trains once (first seed), while the best rate lies on the
grid's edge the next rate beyond it too (``--lr-extensions``), and the one with the best
*validation* IoU (best epoch) is kept; the test data never takes part in any choice. Then every model trains
with each of ``--seeds`` (initialisation, batch order and augmentation; the data stay the same) and is scored on
the test cities. Fitted baselines (``threshold``, ``rti``) choose their own values on the training data.

Writes, per scenario, under ``--out``: ``lr_sweep.csv`` (every rate tried, its validation IoU, the choice),
``runs.csv`` (one row per model and seed), and over all scenarios ``results.csv`` and ``results.md`` (mean ± sample
standard deviation over seeds, ratio to ``--baseline`` measured in the same run). Runs already finished in
``--out`` are reused, so an interrupted benchmark continues where it stopped.

    python benchmarks/accuracy.py --seeds 0,1,2                              # full size: T=64, 100x100 (GPU)
    OMP_NUM_THREADS=1 python benchmarks/accuracy.py --size 48 --frames 8 --n-train 192 --n-val 64 --n-test 128 \\
        --epochs 8 --batch-size 8 --scenarios dense --max-floor-fraction 0 --out runs/bench_accuracy   # CPU-sized
        # (the README's table: its --models list, and --scenarios sparse as a second process, same --out)
    python benchmarks/accuracy.py --size 16 --frames 4 --n-train 32 --n-val 8 --n-test 8 --epochs 1 \\
        --seeds 0,1 --lrs 1e-3,3e-3 --models unet,seednet_small,threshold --out runs/smoke   # smoke test

Model specs are registry names, optionally with a variant after ``@`` (see ``VARIANTS``): the ablation rows are
``unet@physics`` (``unet`` fed TomoFormer's physics inputs) and ``tomoformer_pyramid`` (TomoFormer without its
Transformer). ``seednet*`` always gets ``img_size`` = the map size, so its dense head predicts every cell.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tomoformer.checkpoint import load_checkpoint
from tomoformer.data.datamodule import AugmentOptions
from tomoformer.data.simulated import simulate_dataset
from tomoformer.io import write_text_atomic
from tomoformer.models.protocol import requires_fit
from tomoformer.models.registry import create_model
from tomoformer.outputs import check_recorded, write_recorded
from tomoformer.sim.config import SimConfig
from tomoformer.tasks.evaluate import evaluate_models
from tomoformer.tasks.train import TrainConfig, run_training

SCENARIOS = {
    "dense": {},
    "sparse": {"measured_fraction": 0.1, "sparsity_mode": "random", "noise_std_db": 4.0, "floor_db": -130.0},
}
VARIANTS: dict[str, dict[str, Any]] = {
    "transformer": {"decoder": "transformer"},
    "physics": {"physics_features": True},
    "patch": {"tokens": "patch"},
    "fill": {"fill": "neighbours"},
    # rti's scan beyond its default grids (wider ellipses, fewer links per sample)
    "wide": {"ellipse_grid": (0.5, 1.0, 2.0, 4.0, 8.0), "links_grid": (500, 1000, 2000, 8000)},
}
MODELS = (
    "tomoformer_tiny",
    "tomoformer_tiny@transformer",
    "tomoformer_pyramid",
    "unet",
    "unet@physics",
    "convgru",
    "seednet",
    "seednet@patch",
    "threshold",
    "threshold@fill",
    "rti",
    "rti@wide",
)


def model_kwargs(spec: str, size: int) -> tuple[str, dict[str, Any]]:
    """``"unet@physics"`` -> ("unet", {"physics_features": True}); seednet's dense head gets the map size."""
    name, _, variant = spec.partition("@")
    if variant and variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r} in {spec!r}; choose one of: {', '.join(VARIANTS)}")
    kwargs = dict(VARIANTS.get(variant, {}))
    if name.startswith("seednet"):
        kwargs.setdefault("img_size", size)
    return name, kwargs


def is_fitted(spec: str, size: int) -> bool:
    """True for a fitted baseline (``threshold``, ``rti``): no learning rate to choose, nothing to train."""
    name, kwargs = model_kwargs(spec, size)
    return requires_fit(create_model(name, **kwargs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench_accuracy")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-val", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=20, help="the same for every learned model")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lrs", default="3e-4,1e-3,3e-3", help="learning rates tried on validation data")
    parser.add_argument(
        "--lr-extensions", type=int, default=2, help="rates tried beyond the grid's edge while the edge wins"
    )
    parser.add_argument("--seeds", default="0,1,2", help="training seeds; mean ± spread over them")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--scenarios", default="dense,sparse")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--baseline", default="unet", help="ratios are to this model's mean IoU in the same run")
    parser.add_argument("--device", default="auto", help="simulation and training device (auto, cpu, cuda)")
    parser.add_argument(
        "--max-floor-fraction",
        type=float,
        default=AugmentOptions.max_floor_fraction,
        help="random receiver-floor augmentation (0 = off; default: the training default)",
    )
    args = parser.parse_args()

    import torch

    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    seeds = [int(s) for s in args.seeds.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    specs = args.models.split(",")
    out = Path(args.out)
    check_recorded(out / "results.csv", out / "results.md")  # refuse a results file it did not write, before training
    for scenario in args.scenarios.split(","):
        folder = out / scenario
        paths = simulate_splits(args, scenario, folder, cuda)
        done_path = folder / "runs.json"
        done: dict[str, dict[str, Any]] = json.loads(done_path.read_text()) if done_path.exists() else {}

        def run(spec: str, lr: float, seed: int) -> dict[str, Any]:
            return train_once(args, scenario, folder, paths, done, spec, lr, seed, cuda)  # noqa: B023

        sweep_rows, chosen = [], {}
        fitted = {spec for spec in specs if is_fitted(spec, args.size)}
        for spec in specs:
            if spec in fitted:
                chosen[spec] = lrs[0]  # unused by fitted models; one run per seed
                continue
            tried = sweep_lr(lambda lr: run(spec, lr, seeds[0])["val_iou"], lrs, args.lr_extensions)  # noqa: B023
            chosen[spec] = max(tried, key=lambda lr: tried[lr])
            sweep_rows += [
                {"model": spec, "lr": lr, "val_iou": tried[lr], "chosen": lr == chosen[spec], "grid": lr in lrs}
                for lr in sorted(tried)
            ]
        write_csv(folder / "lr_sweep.csv", sweep_rows)

        run_rows = []
        for seed in seeds:
            runs = {spec: run(spec, chosen[spec], seed) for spec in specs}
            models = {spec: load_checkpoint(r["checkpoint"]).model for spec, r in runs.items()}
            scores = evaluate_models(
                models, paths["test"], folder / f"test_seed{seed}", batch_size=args.batch_size, title=scenario
            )
            for spec in specs:
                run_rows.append(
                    {
                        "scenario": scenario,
                        "model": spec,
                        "seed": seed,
                        "lr": "" if spec in fitted else chosen[spec],
                        "val_iou": runs[spec]["val_iou"],
                        "test_iou": scores[spec]["iou"],
                        "test_f1": scores[spec]["f1"],
                        "train_s": runs[spec]["train_s"],
                        # what a fitted baseline chose on the training data (rule, regularisation, ellipse, links)
                        "fitted": models[spec].describe() if spec in fitted else "",
                    }
                )
        write_csv(folder / "runs.csv", run_rows)
        # Every scenario finished under --out so far, also those run by another process (one per scenario).
        finished = read_runs(out)
        summary = [row for sc in finished for row in aggregate(sc, finished[sc], args.baseline)]
        check_recorded(out / "results.csv", out / "results.md")
        write_csv(out / "results.csv", summary)
        write_recorded(out / "results.md", markdown(summary, args), command="benchmarks/accuracy.py")
        print_table(scenario, [row for row in summary if row["scenario"] == scenario], args.baseline)


def sweep_lr(val_iou: Callable[[float], float], lrs: list[float], extensions: int) -> dict[float, float]:
    """Validation IoU per learning rate: every rate of ``lrs``, then, while the best one is the smallest or the
    largest tried, the next rate beyond it (the grid's own ratio continued), at most ``extensions`` times."""
    tried = {lr: val_iou(lr) for lr in sorted(set(lrs))}
    for _ in range(extensions):
        ordered = sorted(tried)
        best = max(tried, key=lambda lr: tried[lr])
        if len(ordered) < 2 or best not in (ordered[0], ordered[-1]):
            break
        neighbour = ordered[-2] if best == ordered[-1] else ordered[1]
        beyond = float(f"{best * best / neighbour:.3g}")
        tried[beyond] = val_iou(beyond)
    return tried


def train_once(
    args: argparse.Namespace,
    scenario: str,
    folder: Path,
    paths: dict[str, Path],
    done: dict[str, dict[str, Any]],
    spec: str,
    lr: float,
    seed: int,
    cuda: bool,
) -> dict[str, Any]:
    """Train (or fit) ``spec`` once with ``lr`` and ``seed``; cached in ``folder/runs.json`` (``done``)."""
    key = f"{spec}|lr={lr:g}|seed={seed}"
    if key not in done:
        name, kwargs = model_kwargs(spec, args.size)
        config = TrainConfig(
            data=str(paths["train"]),
            val_data=str(paths["val"]),
            out=str(folder / "runs" / spec.replace("@", "_") / f"lr{lr:g}_seed{seed}"),
            model=name,
            model_kwargs=kwargs,
            augment=AugmentOptions(max_floor_fraction=args.max_floor_fraction or None),
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            lr=lr,
            seed=seed,
            accelerator="gpu" if cuda else "cpu",
            progress=False,
            overwrite=True,  # a run folder not in runs.json is an unfinished try of this benchmark: start it again
        )
        start = time.perf_counter()
        result = run_training(config)
        seconds = time.perf_counter() - start
        val_iou = result.metrics.get("best_val_iou", result.metrics.get("val_iou", float("nan")))
        done[key] = {"checkpoint": str(result.best_checkpoint), "val_iou": val_iou, "train_s": seconds}
        write_text_atomic(folder / "runs.json", json.dumps(done, indent=1))
        print(f"{scenario}: {key}: val IoU {val_iou:.3f}, {seconds:.0f} s")
    return done[key]


def simulate_splits(args: argparse.Namespace, scenario: str, folder: Path, cuda: bool) -> dict[str, Path]:
    """The scenario's train / val / test stores (simulated once, reused by later runs)."""
    config = SimConfig.from_dict({"size": args.size, "frames": args.frames, "style": "mixed", **SCENARIOS[scenario]})
    paths = {}
    splits = (("train", args.n_train, 0), ("val", args.n_val, 20_000), ("test", args.n_test, 10_000))
    for split, n, offset in splits:
        paths[split] = folder / "data" / f"{split}.zarr"
        if not paths[split].exists():
            device = "cuda" if cuda else "cpu"
            simulate_dataset(paths[split], n=n, config=config, seed=args.data_seed + offset, device=device)
    return paths


def aggregate(scenario: str, rows: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds per model; ratio of mean test IoU to ``baseline``'s."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    means = {m: statistics.fmean(r["test_iou"] for r in rs) for m, rs in by_model.items()}
    base = means.get(baseline, float("nan"))
    out = []
    for model, rs in by_model.items():
        ious = [r["test_iou"] for r in rs]
        out.append(
            {
                "scenario": scenario,
                "model": model,
                "seeds": len(rs),
                "lr": rs[0]["lr"],
                "test_iou_mean": means[model],
                "test_iou_std": statistics.stdev(ious) if len(ious) > 1 else 0.0,
                "test_iou_min": min(ious),
                "test_iou_max": max(ious),
                "val_iou_mean": statistics.fmean(r["val_iou"] for r in rs),
                "ratio_to_baseline": means[model] / base if base == base and base > 0 else float("nan"),
                "train_s_mean": statistics.fmean(r["train_s"] for r in rs),
                "fitted": rs[0].get("fitted", ""),
            }
        )
    return sorted(out, key=lambda r: -r["test_iou_mean"])


def read_runs(out: Path) -> dict[str, list[dict[str, Any]]]:
    """The rows of every ``out/<scenario>/runs.csv``, numbers parsed, by scenario."""
    finished: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob("*/runs.csv")):
        lines = path.read_text().splitlines()
        rows = [{key: _parse(value) for key, value in row.items()} for row in csv.DictReader(lines)]
        finished[path.parent.name] = rows
    return finished


def _parse(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(rows[0])
    writer.writerows([_cell(v) for v in row.values()] for row in rows)
    write_recorded(path, buffer.getvalue(), command="benchmarks")  # never a results file it did not write


def _cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def markdown(summary: list[dict[str, Any]], args: argparse.Namespace) -> str:
    command = (
        f"python benchmarks/accuracy.py --size {args.size} --frames {args.frames} --n-train {args.n_train} "
        f"--n-val {args.n_val} --n-test {args.n_test} --epochs {args.epochs} --batch-size {args.batch_size} "
        f"--lrs {args.lrs} --lr-extensions {args.lr_extensions} --seeds {args.seeds} --data-seed {args.data_seed} "
        f"--scenarios {','.join(dict.fromkeys(r['scenario'] for r in summary))} "
        f"--models {args.models} --baseline {args.baseline} --max-floor-fraction {args.max_floor_fraction}"
    )
    lines = [f"Command: `{command}`", ""]
    lines += [
        f"| scenario | model | test IoU (mean ± sd, {len(args.seeds.split(','))} seeds) | min-max | ratio to "
        f"{args.baseline} | lr (by val IoU) | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(
            f"| {r['scenario']} | `{r['model']}` | {r['test_iou_mean']:.3f} ± {r['test_iou_std']:.3f} | "
            f"{r['test_iou_min']:.3f}-{r['test_iou_max']:.3f} | {r['ratio_to_baseline']:.3f} | {r['lr'] or '-'} | "
            f"{r['train_s_mean']:.0f} |"
        )
    fitted = [f"- {r['scenario']}, `{r['model']}` (seed 0): {r['fitted']}" for r in summary if r.get("fitted")]
    if fitted:
        lines += ["", "What the fitted baselines chose on the (un-augmented) training data:", "", *fitted]
    return "\n".join(lines) + "\n"


def print_table(scenario: str, rows: list[dict[str, Any]], baseline: str) -> None:
    print(f"\n{scenario}: test IoU on held-out cities, mean ± sd over seeds (ratio to {baseline}, same run)")
    print(f"{'model':30s} {'IoU':>7s} {'sd':>6s} {'ratio':>7s} {'lr':>8s} {'train s':>8s}")
    for r in rows:
        lr = f"{r['lr']:g}" if isinstance(r["lr"], float) else "-"
        print(
            f"{r['model']:30s} {r['test_iou_mean']:7.3f} {r['test_iou_std']:6.3f} {r['ratio_to_baseline']:7.3f} "
            f"{lr:>8s} {r['train_s_mean']:8.0f}"
        )


if __name__ == "__main__":
    main()
