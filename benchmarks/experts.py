"""Divide and conquer, measured: one model versus clustered experts and their combinations, at the same budget.

Data: mixed-style simulated cities (``tomoformer.sim``: dense, suburban, industrial, oldtown, open), one training
set (a seeded 10 % of it validates / picks the best epoch) and a held-out test set. Every variant gets the same
training budget of ``epochs`` passes over the training samples:

* ``single``: one model, ``epochs`` epochs on everything;
* ``experts/hard``, ``experts/soft``: one sub-model per cluster, ``epochs`` epochs over its own cluster
  (so all experts together see each sample ``epochs`` times), combined by hard routing or membership weights;
* ``<combine>+global``: sub-models for ``epochs - global_epochs`` epochs, then the combined model fine-tuned end to
  end for ``global_epochs`` (soft, gate, fusion, attention; soft with FiLM offset conditioning; soft with the
  auxiliary membership/offset head);
* ``init-single/hard``, ``init-single/soft``: ``single`` trained for half the budget, then one copy fine-tuned per
  cluster for the other half; ``init-single/k=1 (control)``: the same with one cluster holding every sample, which
  separates the effect of specialising from that of the second stage's learning-rate restart.

With ``--features encoder`` the samples are clustered on the trained single model's features instead of signal
statistics.

* ``init-single/lora shared``: like ``init-single/hard``, but the per-cluster copies are LoRA adapters (rank
  ``--lora-rank``) and heads on one shared frozen backbone (``share_backbone``).

Reported: test IoU overall and per cluster (clusters of the test samples from the experts' clusterer, the same
for every variant of a seed), mean and spread (std) over seeds, and how well the clusters match the city styles
(adjusted Rand index). A global-stage epoch runs every expert on every sample, so it costs K times the compute
of an expert-stage epoch: the budget is equal in samples seen, not in FLOPs.

    OMP_NUM_THREADS=1 python benchmarks/experts.py          # CPU-sized: 32x32, T=8, 192 + 64 samples, 3 seeds
    OMP_NUM_THREADS=1 python benchmarks/experts.py --epochs 12 --global-epochs 3   # twice the budget
    # Ray-traced data (docs/sionna.md): procedural cities + Munich tiles to train, procedural + real cities to test
    OMP_NUM_THREADS=1 python benchmarks/experts.py --train-data rt_train_munich.zarr --test-data rt_test_mixed.zarr \
        --k 2 --epochs 12 --global-epochs 3 --batch-size 8

With ``--train-data``/``--test-data`` nothing is simulated, and the clusters are compared with the datasets'
``group`` names (city style or city) instead of the simulator's styles.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.checkpoint import load_checkpoint
from tomoformer.data.datamodule import SignalMapDataset
from tomoformer.data.format import open_dataset, write_dataset
from tomoformer.experts.config import ExpertsConfig
from tomoformer.experts.fit import run_experts_fit
from tomoformer.experts.task import cluster_metrics, predict_with_clusters
from tomoformer.io import write_marker, write_text_atomic
from tomoformer.sim import STYLES, SimConfig, dataset_attrs, simulate_samples
from tomoformer.tasks.inference import predict_probabilities
from tomoformer.tasks.train import TrainConfig, run_training

GLOBAL_VARIANTS: dict[str, dict[str, Any]] = {
    "soft+global": {"combine": "soft"},
    "gate+global": {"combine": "gate"},
    "fusion+global": {"combine": "fusion"},
    "attention+global": {"combine": "attention"},
    "soft+film+global": {"combine": "soft", "film": True},
    "soft+aux+global": {"combine": "soft", "aux": True},
}


# --mix physics: two propagation regimes in one dataset (frequency, wall and indoor loss, noise), every city style
# in both; the clusters then differ in how buildings show in the signals, not only in what the city looks like.
REGIMES: dict[str, dict[str, Any]] = {
    "3.5GHz_12dB": {},
    "28GHz_25dB": {"frequency_hz": 28e9, "wall_loss_db": 25.0, "indoor_loss_db_per_m": 1.5, "noise_std_db": 3.0},
}


def simulate(out: Path, size: int, frames: int, n_train: int, n_test: int, mix: str = "styles") -> dict[str, Path]:
    config = SimConfig(size=size, frames=frames, style="mixed")
    paths = {}
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 10_000)):
        paths[split] = out / "data" / f"{split}.zarr"
        if paths[split].exists():
            continue
        if mix == "styles":
            write_dataset(paths[split], simulate_samples(config, seed, 0, n), dataset_attrs(config))
            continue
        # Half the samples per regime; "group" becomes the regime, so the ARI column measures recovering it.
        parts = []
        for r, options in enumerate(REGIMES.values()):
            regime = dataclasses.replace(config, **options)
            part = simulate_samples(regime, seed + r, 0, n // 2 if r == 0 else n - n // 2)
            part["group"][:] = r
            parts.append(part)
        arrays = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        attrs = {**dataset_attrs(config), "group_names": list(REGIMES)}
        write_dataset(paths[split], arrays, attrs)
    return paths


def scores_for(probabilities: np.ndarray, truth: np.ndarray, clusters: np.ndarray) -> dict[str, Any]:
    s = cluster_metrics(probabilities, truth, clusters)
    return {"iou": s["iou"], "per_cluster": {k: v["iou"] for k, v in s["per_cluster"].items()}}


def run_seed(args: argparse.Namespace, paths: dict[str, Path], seed: int) -> dict[str, Any]:
    out = Path(args.out) / f"seed{seed}"
    expert = {"model": args.model, "model_kwargs": json.loads(args.model_kwargs)}
    base = ExpertsConfig(
        data=str(paths["train"]),
        k=args.k,
        expert_models=[expert],
        batch_size=args.batch_size,
        lr=args.lr,
        global_lr=args.lr / 3,
        seed=seed,
        accelerator="cpu",
        progress=False,
        augment={"d4": True},
    )
    test_source = open_dataset(paths["test"], require_buildings=True)
    test = SignalMapDataset(test_source)
    truth = test_source.read("buildings", slice(None))
    results: dict[str, Any] = {}

    def single(epochs: int, name: str) -> Path:
        config = TrainConfig(
            data=str(paths["train"]),
            out=str(out / name),
            model=args.model,
            model_kwargs=expert["model_kwargs"],
            max_epochs=epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=seed,
            accelerator="cpu",
            progress=False,
        )
        return run_training(config).best_checkpoint

    best = single(args.epochs, "single")
    if args.features == "encoder":
        # Cluster on what the trained single model sees (its head input, mean-pooled), not on signal statistics.
        base = dataclasses.replace(base, features="encoder", encoder_checkpoint=str(best))

    # Experts at the full budget; their clusterer defines the test clusters for every variant of this seed.
    full = run_experts_fit(dataclasses.replace(base, out=str(out / "experts"), epochs=args.epochs))
    model = load_checkpoint(full.model_path).model
    for combine in ("hard", "soft"):
        model.combine = combine
        probabilities, clusters, _ = predict_with_clusters(model, test, args.batch_size)
        if "experts" in args.variants:
            results[f"experts/{combine}"] = scores_for(probabilities, truth, clusters)
    from sklearn.metrics import adjusted_rand_score

    styles = test_source.read("group", slice(None)).astype(int)
    style_names = list(test_source.attrs.get("group_names") or STYLES)
    results["_clusters"] = {
        "k": int(model.num_clusters),
        "test_sizes": np.bincount(clusters, minlength=model.num_clusters).tolist(),
        "ari_vs_style": float(adjusted_rand_score(styles, clusters)),
        # Which city styles each cluster holds (test samples per style, in STYLES order).
        "style_names": style_names,
        "styles": {
            int(c): np.bincount(styles[clusters == c], minlength=len(style_names)).tolist() for c in set(clusters)
        },
    }

    results["single"] = scores_for(predict_probabilities(load_checkpoint(best).model, test), truth, clusters)

    # Shared expert stage for the global variants, then one global fine-tuning per variant.
    stage = out / "stage"
    first = args.epochs - args.global_epochs
    if "global" in args.variants:
        run_experts_fit(dataclasses.replace(base, out=str(stage), epochs=first))
    for name, options in GLOBAL_VARIANTS.items() if "global" in args.variants else ():
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(stage / "experts", folder / "experts")
        shutil.copy(stage / "clusters.npz", folder / "clusters.npz")
        # Mark the folder as an experts run of ours, so that fit --resume may continue it (tomoformer.outputs).
        write_marker(folder, {"kind": "run", "command": "experts fit"}, created=True, add=["experts", "clusters.npz"])
        config = dataclasses.replace(
            base, out=str(folder), epochs=first, global_epochs=args.global_epochs, resume=True, **options
        )
        fitted = load_checkpoint(run_experts_fit(config).model_path).model
        results[name] = scores_for(predict_with_clusters(fitted, test, args.batch_size)[0], truth, clusters)

    if args.with_init and "init" in args.variants:
        half = max(1, args.epochs // 2)
        init = single(half, "single-half")
        config = dataclasses.replace(
            base,
            out=str(out / "init-single"),
            epochs=args.epochs - half,
            init_checkpoint=str(init),
            expert_models=[{"model": "init"}],
        )
        fitted = load_checkpoint(run_experts_fit(config).model_path).model
        for combine in ("hard", "soft"):
            fitted.combine = combine
            probabilities = predict_with_clusters(fitted, test, args.batch_size)[0]
            results[f"init-single/{combine}"] = scores_for(probabilities, truth, clusters)
        # Control: the same two-stage schedule with a single "cluster" (all samples), so that any gain of the
        # experts above is specialisation, not the learning-rate restart of the second stage.
        control = dataclasses.replace(config, out=str(out / "init-single-k1"), k=1)
        fitted = load_checkpoint(run_experts_fit(control).model_path).model
        probabilities = predict_with_clusters(fitted, test, args.batch_size)[0]
        results["init-single/k=1 (control)"] = scores_for(probabilities, truth, clusters)
        shared = dataclasses.replace(
            config, out=str(out / "init-single-lora"), policy=f"lora:{args.lora_rank}", share_backbone=True
        )
        fitted = load_checkpoint(run_experts_fit(shared).model_path).model
        fitted.combine = "hard"
        probabilities = predict_with_clusters(fitted, test, args.batch_size)[0]
        results["init-single/lora shared"] = scores_for(probabilities, truth, clusters)
    test_source.close()
    return results


def sample_sd(values: np.ndarray) -> float:
    """The sample standard deviation (n - 1 in the denominator) of the finite values; 0 for fewer than two."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def table(per_seed: list[dict[str, Any]]) -> str:
    names = [n for n in per_seed[0] if not n.startswith("_")]
    k = max(len(r[n]["per_cluster"]) for r in per_seed for n in names)
    head = "| variant | IoU (mean ± sample sd) | " + " | ".join(f"cluster {i}" for i in range(k)) + " |"
    lines = [head, "|" + "---|" * (k + 2)]
    for name in names:
        iou = np.array([r[name]["iou"] for r in per_seed])
        cells = []
        for i in range(k):
            v = np.array([r[name]["per_cluster"].get(i, np.nan) for r in per_seed], dtype=float)
            cells.append(f"{np.nanmean(v):.3f} ± {sample_sd(v):.3f}" if np.isfinite(v).any() else "-")
        lines.append(f"| {name} | {iou.mean():.3f} ± {sample_sd(iou):.3f} | " + " | ".join(cells) + " |")
    clusters = [r["_clusters"] for r in per_seed]
    lines.append("")
    lines.append(
        "clusters per seed (k, test sizes, adjusted Rand index vs the data's groups): "
        + "; ".join(f"k={c['k']} {c['test_sizes']} ARI={c['ari_vs_style']:.2f}" for c in clusters)
    )
    names = ", ".join(clusters[0]["style_names"])
    lines.append(f"test samples per group ({names}) in each cluster, seed 0: {clusters[0]['styles']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench_experts")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=192)
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6, help="training budget in passes over the training set")
    parser.add_argument("--global-epochs", type=int, default=2, help="part of the budget given to the global stage")
    parser.add_argument("--k", type=int, default=3, help="clusters (0 = chosen by silhouette)")
    parser.add_argument("--model", default="unet")
    parser.add_argument("--model-kwargs", default='{"base_channels": 8, "depth": 2}', help="JSON")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--no-init", dest="with_init", action="store_false", help="skip the init-single variants")
    parser.add_argument("--lora-rank", type=int, default=4, help="rank of the shared-backbone LoRA experts")
    parser.add_argument(
        "--features",
        choices=("stats", "encoder"),
        default="stats",
        help="clustering features (encoder: the single model's)",
    )
    parser.add_argument("--mix", choices=("styles", "physics"), default="styles", help="what differs between samples")
    parser.add_argument(
        "--variants", default="experts,global,init", help="comma list of experts, global, init (single always runs)"
    )
    parser.add_argument("--train-data", help="a dataset to train on instead of simulating (e.g. ray-traced)")
    parser.add_argument("--test-data", help="the held-out dataset to go with --train-data")
    args = parser.parse_args()
    args.k = args.k or None
    args.variants = set(args.variants.split(","))
    if not args.variants <= {"experts", "global", "init"}:
        parser.error(f"--variants takes experts, global, init; got {sorted(args.variants)}")
    if (args.train_data is None) != (args.test_data is None):
        parser.error("--train-data and --test-data go together")
    start = time.perf_counter()
    if args.train_data:
        paths = {"train": Path(args.train_data), "test": Path(args.test_data)}
    else:
        paths = simulate(Path(args.out), args.size, args.frames, args.n_train, args.n_test, args.mix)
    per_seed = [run_seed(args, paths, int(s)) for s in args.seeds.split(",")]
    text = table(per_seed)
    minutes = (time.perf_counter() - start) / 60
    options = json.dumps(vars(args), default=sorted)
    text += f"\n\n{len(per_seed)} seeds, {minutes:.1f} min on this machine; options: {options}\n"
    out = Path(args.out)
    write_text_atomic(out / "results.json", json.dumps(per_seed, indent=1, default=str))
    write_text_atomic(out / "results.md", text)
    print(text)


if __name__ == "__main__":
    main()
