"""Accuracy benchmark: every model, the same data and training budget, IoU on held-out simulated cities.

Two scenarios on mixed-style cities (2 m cells): ``dense`` (every cell of every frame measured, 1 dB noise) and
``sparse`` (10 % of the cells per frame, 4 dB noise, a receiver floor at -130 dB). Prints one IoU table per
scenario with each model's ratio to the best baseline measured in the same run.

    python benchmarks/accuracy.py                                   # full size: T=64, 100x100 (use a GPU)
    python benchmarks/accuracy.py --size 48 --frames 16 --n-train 320 --n-test 64 --epochs 10   # CPU-sized
    python benchmarks/accuracy.py ... --rt-data rt_etoile.zarr,rt_florence.zarr   # also score on ray-traced tiles

``--rt-data`` scores the same trained models, without any fine-tuning, on ray-traced tiles (``tomoformer simulate
--engine sionna``): how far what was learned on the fast simulator carries to realistic propagation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tomoformer.checkpoint import load_checkpoint
from tomoformer.cli.simulate_cmd import simulate_dataset
from tomoformer.data.datamodule import AugmentOptions
from tomoformer.sim.config import SimConfig
from tomoformer.tasks.evaluate import evaluate_models
from tomoformer.tasks.train import TrainConfig, run_training

SCENARIOS = {
    "dense": {},
    "sparse": {"measured_fraction": 0.1, "sparsity_mode": "random", "noise_std_db": 4.0, "floor_db": -130.0},
}
LEARNED = ("tomoformer_tiny", "tomoformer_tiny@transformer", "unet", "seednet")
FITTED = ("threshold", "rti")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench_accuracy")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=20, help="the same for every learned model")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--scenarios", default="dense,sparse")
    parser.add_argument("--models", default=",".join(LEARNED + FITTED))
    parser.add_argument("--device", default="auto", help="simulation and training device (auto, cpu, cuda)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-floor-fraction",
        type=float,
        default=AugmentOptions.max_floor_fraction,
        help="random receiver-floor augmentation (0 = off; default: the training default)",
    )
    parser.add_argument("--rt-data", default="", help="comma-separated ray-traced datasets to score the models on too")
    args = parser.parse_args()

    import torch

    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    out = Path(args.out)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for scenario in args.scenarios.split(","):
        config = SimConfig.from_dict(
            {"size": args.size, "frames": args.frames, "style": "mixed", **SCENARIOS[scenario]}
        )
        data = out / scenario / "data"
        paths = {}
        for split, n, seed in (("train", args.n_train, args.seed), ("test", args.n_test, args.seed + 10_000)):
            paths[split] = data / f"{split}.zarr"
            if not paths[split].exists():
                simulate_dataset(paths[split], n=n, config=config, seed=seed, device="cuda" if cuda else "cpu")
        models, seconds = {}, {}
        for spec in args.models.split(","):
            name, _, decoder = spec.partition("@")
            kwargs = {"decoder": decoder} if decoder else {}
            train = TrainConfig(
                data=str(paths["train"]),
                out=str(out / scenario / "runs" / spec.replace("@", "_")),
                model=name,
                model_kwargs=kwargs,
                augment=AugmentOptions(max_floor_fraction=args.max_floor_fraction or None),
                max_epochs=args.epochs,
                batch_size=args.batch_size,
                lr=1e-3,
                seed=args.seed,
                accelerator="gpu" if cuda else "cpu",
                progress=False,
            )
            start = time.perf_counter()
            result = run_training(train)
            seconds[spec] = time.perf_counter() - start
            print(f"{scenario}: trained {spec} in {seconds[spec]:.0f} s (val IoU {result.metrics.get('best_val_iou')})")
            models[spec] = load_checkpoint(result.best_checkpoint).model
        results = evaluate_models(
            models, paths["test"], out / scenario, batch_size=args.batch_size, title=f"accuracy benchmark: {scenario}"
        )
        summary[scenario] = {k: {"iou": v["iou"], "f1": v["f1"], "train_s": seconds[k]} for k, v in results.items()}
        print_table(scenario, summary[scenario])
        for rt_path in filter(None, args.rt_data.split(",")):
            key = f"{scenario} -> {Path(rt_path).stem}"
            folder = out / key.replace(" -> ", "_on_")
            rt = evaluate_models(models, rt_path, folder, batch_size=args.batch_size, title=key)
            summary[key] = {k: {"iou": v["iou"], "f1": v["f1"], "train_s": seconds[k]} for k, v in rt.items()}
            print_table(key, summary[key])
        (out / "summary.json").write_text(json.dumps(summary, indent=2))  # after each scenario: partial runs count


def print_table(scenario: str, rows: dict[str, dict[str, float]]) -> None:
    baselines = {k: v for k, v in rows.items() if not k.startswith("tomoformer")}
    best_name = max(baselines, key=lambda k: baselines[k]["iou"]) if baselines else None
    best = baselines[best_name]["iou"] if best_name else float("nan")
    print(f"\n{scenario}: IoU on held-out cities (ratio to the best baseline, {best_name})")
    print(f"{'model':32s} {'IoU':>7s} {'F1':>7s} {'ratio':>7s} {'train s':>8s}")
    for name, m in sorted(rows.items(), key=lambda kv: -kv[1]["iou"]):
        print(f"{name:32s} {m['iou']:7.3f} {m['f1']:7.3f} {m['iou'] / best:7.2f} {m['train_s']:8.0f}")


if __name__ == "__main__":
    main()
