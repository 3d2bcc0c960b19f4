"""Zero-shot ablation: models trained only on the fast simulator, tested on ray-traced real geometry.

Four training worlds of the same size, each simulated here (100 x 100 cells at 2 m, T = 16, 3.5 GHz, a quarter of
the transmitters outside the tile):

* ``legacy``: the physics before the randomised simulator (``configs/sim_legacy.yaml``: 12 dB walls, roofs as
  walls, no canyon light) and the five v1 city styles;
* ``physics``: the randomised physics (default ``SimConfig``), the same five v1 styles;
* ``cities``: randomised physics and ``--style mixed`` (v1 and v2 cities);
* ``cities+real``: as ``cities`` for half the samples, the other half on real footprints (``--geometry``: a
  ``tomoformer geometry import`` store of cities that are not tested here, e.g. Helsinki and the Finnish town).

Every model is trained on each world with the same budget and learning rate, its checkpoint picked by validation
IoU on held-out samples of the same world (no ray-traced data is seen for training or selection), then tested on
the ray-traced tiles of ``--test`` (e.g. Munich, Étoile and Bubeneč of ``benchmarks/realcity_corpus.py``; never
Florence or San Francisco). ``threshold`` is fitted on each world's training data, the same way. Output:
``results.csv`` and ``results.md`` (mean ± std over seeds per world, model and test city; ratio to ``threshold``).

    python benchmarks/zeroshot.py --geometry rt/pre_geo.zarr \\
        --test rt/train_munich.zarr,rt/train_etoile.zarr,rt/val_bubenec.zarr --out runs/zeroshot
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from realcity import merged, read_csvs, test_iou, tomoformer, trained, write_csv
from tomoformer.outputs import check_recorded, write_recorded

ROOT = Path(__file__).resolve().parents[1]
V1_STYLES = ("dense", "suburban", "industrial", "oldtown", "open")
WORLDS = ("legacy", "physics", "cities", "cities+real")
COMMON = ["--size", "100", "--frames", "16", "--set", "tx_outside_fraction=0.25", "--no-progress"]


def simulate(out: Path, n: int, seed: int, *extra: str) -> Path:
    if not out.exists():
        tomoformer("simulate", "--out", str(out), "--n", str(n), "--seed", str(seed), *COMMON, *extra)
    return out


def world(name: str, folder: Path, n: int, seed: int, geometry: Path | None) -> Path:
    """The training (``seed``) or validation (``seed + 10_000``) store of one world, ``n`` samples."""
    folder.mkdir(parents=True, exist_ok=True)
    legacy = ["--config", str(ROOT / "configs" / "sim_legacy.yaml")]
    if name in ("legacy", "physics"):
        parts = [
            simulate(
                folder / f"{name}_{style}_{seed}.zarr",
                n // 5,
                seed + i,
                "--style",
                style,
                *(legacy if name == "legacy" else []),
            )
            for i, style in enumerate(V1_STYLES)
        ]
    elif name == "cities":
        parts = [simulate(folder / f"cities_{seed}.zarr", n, seed, "--style", "mixed")]
    else:
        if geometry is None:
            raise SystemExit("world cities+real needs --geometry")
        parts = [
            simulate(folder / f"cities_half_{seed}.zarr", n // 2, seed, "--style", "mixed"),
            simulate(folder / f"real_{seed}.zarr", n - n // 2, seed, "--geometry", str(geometry)),
        ]
    return merged(parts, folder / f"{name.replace('+', '_')}_{seed}.zarr")


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    """Train every (world, model, seed), then test them all (so the test stores may still be in the making)."""
    out, data = args.out, args.data_dir or args.out / "data"
    tests = {Path(p).stem.removeprefix("train_").removeprefix("val_"): Path(p) for p in args.test.split(",")}
    worlds = {name: world(name, data, args.n, 0, args.geometry) for name in args.worlds}
    runs: dict[tuple[str, str, int], tuple[list[str], float]] = {}
    for name, train in worlds.items():
        val = world(name, data, args.n_val, 10_000, args.geometry)
        tag = name.replace("+", "_")
        for model in args.models:
            for seed in args.seeds:
                began = time.perf_counter()
                best = trained(
                    args,
                    out / "runs" / f"{tag}_{model}_s{seed}",
                    "train",
                    *("--model", model, "--seed", str(seed), "--data", str(train), "--val-data", str(val)),
                    *("--max-steps", str(args.steps)),
                )
                runs[(name, model, seed)] = (["--checkpoint", str(best)], time.perf_counter() - began)
        if args.threshold:
            runs[(name, "threshold", 0)] = (["--model", "threshold", "--fit-data", str(train)], 0.0)
    rows: list[dict[str, object]] = []
    for (name, model, seed), (evaluate_args, seconds) in runs.items():
        for city, test in tests.items():
            where = out / "eval" / f"{name.replace('+', '_')}_{model}_s{seed}_{city}"
            iou = test_iou(args, where, test, evaluate_args)
            rows.append(
                {"world": name, "model": model, "seed": seed, "test": city, "iou": iou, "train_s": round(seconds, 1)}
            )
            print(f"{name:12s} {model:16s} seed {seed} {city:8s} IoU {iou:.3f}", flush=True)
    return rows


def write_results(rows: list[dict[str, object]], out: Path) -> None:
    check_recorded(out / "results.csv", out / "results.md")  # both free or ours before either is written
    write_csv(rows, out / "results.csv")
    cities = list(dict.fromkeys(str(r["test"]) for r in rows))
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        values.setdefault((str(r["world"]), str(r["model"])), {}).setdefault(str(r["test"]), []).append(float(r["iou"]))
    for per_city in values.values():  # the mean over cities, per seed
        per_city["mean"] = [statistics.mean(v) for v in zip(*(per_city[c] for c in cities), strict=True)]
    columns = [*cities, "mean"]
    lines = [
        "| training world | model | " + " | ".join(f"{c} IoU" for c in columns) + " | seeds |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]

    def order(key: tuple[str, str]) -> tuple[int, bool, str]:
        name, model = key
        return (WORLDS.index(name) if name in WORLDS else len(WORLDS), model == "threshold", model)

    for (name, model), per_city in sorted(values.items(), key=lambda item: order(item[0])):
        base = values.get((name, "threshold"), per_city)
        cells = []
        for c in columns:
            mean = statistics.mean(per_city[c])
            spread = statistics.stdev(per_city[c]) if len(per_city[c]) > 1 else 0.0
            ratio = mean / max(statistics.mean(base[c]), 1e-9)
            cells.append(f"{mean:.3f} ± {spread:.3f}" + ("" if model == "threshold" else f" ({ratio:.2f}x)"))
        lines.append(f"| {name} | `{model}` | " + " | ".join(cells) + f" | {len(per_city[cities[0]])} |")
    write_recorded(out / "results.md", "\n".join(lines) + "\n", command="benchmarks/zeroshot.py")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", required=True, help="comma-separated ray-traced test stores")
    parser.add_argument("--geometry", type=Path, help="footprint tiles for the cities+real world")
    parser.add_argument("--worlds", default=",".join(WORLDS))
    parser.add_argument("--models", default="tomoformer_tiny,unet")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n", type=int, default=1000, help="training samples per world")
    parser.add_argument("--n-val", type=int, default=100, help="validation samples per world")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=48, help="training windows (cells); 0 = whole maps")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-args", default="--sample-frames 8", help="more train flags")
    parser.add_argument("--out", type=Path, default=Path("runs/zeroshot"))
    parser.add_argument("--data-dir", type=Path, help="where the simulated worlds go (default OUT/data); shareable")
    parser.add_argument("--no-threshold", dest="threshold", action="store_false", help="skip the fitted threshold")
    parser.add_argument("--combine", help="comma-separated results.csv files of runs split by model: one table")
    args = parser.parse_args()
    if args.combine:
        check_recorded(args.out / "results.csv", args.out / "results.md")
        args.out.mkdir(parents=True, exist_ok=True)
        rows = read_csvs([Path(path) for path in args.combine.split(",")])
        write_results(rows, args.out)
        return
    args.worlds = args.worlds.split(",")
    args.models = args.models.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    check_recorded(args.out / "results.csv", args.out / "results.md")  # before hours of training, not after
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(run(args), args.out)


if __name__ == "__main__":
    main()
