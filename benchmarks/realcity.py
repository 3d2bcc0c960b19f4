"""Real-city benchmark: pretrain on the fast simulator, fine-tune on ray-traced real geometry, test on
ray-traced tiles of a city used for neither training nor model selection (Florence), dense and sparse.

Inputs: the corpus of ``benchmarks/realcity_corpus.py`` (``train_*.zarr``, ``val_bubenec.zarr``,
``test_florence.zarr``) and fast-simulator pretraining stores (``--pre-data``, merged; e.g. mixed-style cities and
real-footprint tiles of the training cities, see the README). Every learned model gets the same budget: pretraining
``--pre-steps`` and fine-tuning / training from scratch ``--ft-steps`` steps of ``--batch-size``, the same learning
rate, the checkpoint picked by validation IoU on Bubeneč (never on Florence). ``threshold`` is fitted on the same
ray-traced training tiles. Rows, per model and seed:

* ``zero-shot``: the pretrained model, no ray-traced data at all;
* ``fine-tuned``: pretrained, then fine-tuned (policy ``full``) on the ray-traced training tiles;
* ``scratch``: trained on the ray-traced training tiles only, same steps as fine-tuning.

Sparse test data: 10 % of cells kept, 4 dB Gaussian noise, cells below -130 dB dropped (seeded), from the dense
test store. Output: ``results.csv`` (one row per run and test set) and ``results.md`` (mean ± std over seeds, and the
ratio to ``threshold`` measured in the same run).

    python benchmarks/realcity.py --corpus rt_corpus --pre-data sim/pre_mixed.zarr,sim/pre_real.zarr \
        --pre-val sim/pre_val.zarr --models tomoformer_tiny,unet --seeds 0,1,2 --out runs/realcity
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tomoformer.data.format import open_dataset, write_dataset
from tomoformer.data.heldout import check_held_out
from tomoformer.errors import DataError, OutputError
from tomoformer.outputs import check_recorded, write_recorded

SPARSE_KEEP, SPARSE_NOISE_DB, SPARSE_FLOOR_DB = 0.10, 4.0, -130.0
TEST_SETS = ("dense", "sparse")


def tomoformer(*args: str) -> None:
    """Run one CLI command; stop on failure (its one-line error is already printed)."""
    print("$ tomoformer " + " ".join(args), flush=True)
    if subprocess.run([sys.executable, "-m", "tomoformer.cli", *args]).returncode != 0:
        raise SystemExit(f"failed: tomoformer {' '.join(args)}")


def sparse_copy(dense: Path, out: Path, seed: int = 0) -> Path:
    """``dense`` with 10 % of cells kept, 4 dB noise and cells below -130 dB dropped (NaN = not measured)."""
    if out.exists():
        return out
    rng = np.random.default_rng(seed)
    with open_dataset(dense, require_buildings=True) as source:
        arrays = {
            key: source.read(key, slice(None))
            for key in ("signals", "tx_pos", "buildings", "group")
            if getattr(source, key, None) is not None
        }
        attrs = dict(source.attrs)
    signals = arrays["signals"].astype(np.float32)
    signals = signals + rng.normal(0.0, SPARSE_NOISE_DB, signals.shape).astype(np.float32)
    signals[(rng.random(signals.shape) >= SPARSE_KEEP) | (signals < SPARSE_FLOOR_DB)] = np.nan
    # A frame with no measured cell is not a measurement: keep one cell so every frame stays valid data.
    empty = ~np.isfinite(signals).any(axis=(2, 3))
    for b, t in zip(*np.nonzero(empty), strict=True):
        signals[b, t, 0, 0] = SPARSE_FLOOR_DB
    arrays["signals"] = signals.astype(np.float16)
    attrs["sparsified"] = {
        "keep": SPARSE_KEEP,
        "noise_std_db": SPARSE_NOISE_DB,
        "floor_db": SPARSE_FLOOR_DB,
        "seed": seed,
        "source": str(dense),
    }
    return write_dataset(out, arrays, attrs)


def merged(stores: list[Path], out: Path) -> Path:
    """One store of several (``tomoformer data merge``), or the single store itself."""
    if len(stores) == 1:
        return stores[0]
    if not out.exists():
        tomoformer("data", "merge", *map(str, stores), "--out", str(out))
    return out


def trained(args: argparse.Namespace, run: Path, *command: str) -> Path:
    """Run a train/finetune command into ``run`` (resumed if interrupted) and return its best checkpoint."""
    best = run / "checkpoints" / "best.ckpt"
    if not (run / "metrics.csv").exists() or not best.exists():
        resume = ["--resume"] if run.exists() else []
        tomoformer(
            *command,
            "--out",
            str(run),
            "--batch-size",
            str(args.batch_size),
            "--lr",
            str(args.lr),
            "--max-epochs",
            "1000",
            "--no-progress",
            *(["--crop", str(args.crop)] if getattr(args, "crop", 0) else []),
            *shlex.split(getattr(args, "train_args", "") or ""),
            *resume,
        )
    return best


def test_iou(args: argparse.Namespace, out: Path, data: Path, model: list[str]) -> float:
    """IoU on ``data`` of one model (``--checkpoint X`` or ``--model threshold --fit-data Y``)."""
    metrics = out / "metrics.json"
    if not metrics.exists():
        tomoformer(
            "evaluate",
            *model,
            "--data",
            str(data),
            "--out",
            str(out),
            "--figures",
            "2",
            "--batch-size",
            str(args.batch_size),
        )
    return float(json.loads(metrics.read_text())["iou"])


def corpus_splits(corpus: Path) -> tuple[list[Path], Path, Path]:
    """The training stores, the validation store and the (dense) test store of a corpus laid out by
    ``realcity_corpus.py``; refuses (one line) a split whose training or validation data name a held-out city or
    hold a test tile (``tomoformer.data.heldout.check_held_out``)."""
    train, val, test = sorted(corpus.glob("train_*.zarr")), corpus / "val_bubenec.zarr", corpus / "test_florence.zarr"
    check_held_out(train, [val], [test])
    return train, val, test


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    corpus, out = args.corpus, args.out
    out.mkdir(parents=True, exist_ok=True)
    train_stores, val, test = corpus_splits(corpus)
    train = merged(train_stores, out / "rt_train.zarr")
    tests = {"dense": test}
    tests["sparse"] = sparse_copy(tests["dense"], out / "test_florence_sparse.zarr")
    pre = None if args.pre_runs else merged([Path(p) for p in args.pre_data.split(",")], out / "pre_train.zarr")
    rows: list[dict[str, object]] = []

    def record(model: str, row: str, seed: int, evaluate_args: list[str], seconds: float) -> None:
        for name, data in tests.items():
            iou = test_iou(args, out / "eval" / f"{model}_{row}_s{seed}_{name}", data, evaluate_args)
            rows.append({"model": model, "row": row, "seed": seed, "test": name, "iou": iou, "train_s": seconds})
            print(f"{model:16s} {row:11s} seed {seed} {name:6s} IoU {iou:.3f}", flush=True)

    if args.threshold:  # deterministic: fitted and scored once
        record("threshold", "fitted", 0, ["--model", "threshold", "--fit-data", str(train)], 0.0)
    for seed in args.seeds:
        for model in args.models:
            common = ["--seed", str(seed), "--model", model]
            began = time.perf_counter()
            if args.pre_runs:  # pretrained elsewhere (e.g. benchmarks/zeroshot.py's cities+real world)
                pre_ckpt = Path(args.pre_runs.format(model=model, seed=seed)) / "checkpoints" / "best.ckpt"
                if not pre_ckpt.is_file():
                    raise SystemExit(f"{pre_ckpt}: no such pretrained checkpoint (--pre-runs)")
            else:
                pre_ckpt = trained(
                    args,
                    out / f"pre_{model}_s{seed}",
                    "train",
                    *common,
                    *("--data", str(pre), "--val-data", str(args.pre_val), "--max-steps", str(args.pre_steps)),
                )
            pre_s = time.perf_counter() - began
            record(model, "zero-shot", seed, ["--checkpoint", str(pre_ckpt)], pre_s)
            began = time.perf_counter()
            ft = trained(
                args,
                out / f"ft_{model}_s{seed}",
                "finetune",
                "--from",
                str(pre_ckpt),
                "--policy",
                "full",
                "--seed",
                str(seed),
                "--data",
                str(train),
                "--val-data",
                str(val),
                "--max-steps",
                str(args.ft_steps),
            )
            record(model, "fine-tuned", seed, ["--checkpoint", str(ft)], pre_s + time.perf_counter() - began)
            began = time.perf_counter()
            scratch = trained(
                args,
                out / f"scratch_{model}_s{seed}",
                "train",
                *common,
                "--data",
                str(train),
                "--val-data",
                str(val),
                "--max-steps",
                str(args.ft_steps),
            )
            record(model, "scratch", seed, ["--checkpoint", str(scratch)], time.perf_counter() - began)
    return rows


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    """``rows`` as a CSV file with a header (the columns of the first row); an existing file is replaced only if
    the folder's record says a benchmark wrote it (tomoformer.outputs.write_recorded)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_recorded(path, buffer.getvalue(), command="benchmarks")


def read_csvs(paths: list[Path]) -> list[dict[str, str]]:
    """The rows of several results.csv files, in order (``--combine``)."""
    return [row for path in paths for row in csv.DictReader(path.read_text().splitlines())]


def write_results(rows: list[dict[str, object]], out: Path) -> None:
    check_recorded(out / "results.csv", out / "results.md")  # both free or ours before either is written
    write_csv(rows, out / "results.csv")
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        groups.setdefault((str(r["model"]), str(r["row"])), {}).setdefault(str(r["test"]), []).append(float(r["iou"]))
    base = {t: statistics.mean(groups[("threshold", "fitted")][t]) for t in TEST_SETS}

    def cell(values: list[float], test: str) -> str:
        mean = statistics.mean(values)
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{mean:.3f} ± {spread:.3f} ({mean / base[test]:.2f}x)"

    lines = [
        "| model | training | Florence dense IoU (x threshold) | Florence sparse IoU (x threshold) | seeds |",
        "|---|---|---|---|---|",
    ]
    for (model, row), tests in groups.items():
        lines.append(
            f"| `{model}` | {row} | {cell(tests['dense'], 'dense')} | {cell(tests['sparse'], 'sparse')} | "
            f"{len(tests['dense'])} |"
        )
    write_recorded(out / "results.md", "\n".join(lines) + "\n", command="benchmarks/realcity.py")
    print("\n".join(lines))


def best_val_iou(run: Path) -> float:
    """The best validation IoU a run folder's metrics.csv records (its best.ckpt's selection score)."""
    with (run / "metrics.csv").open(newline="") as handle:
        return max(float(r["val_iou"]) for r in csv.DictReader(handle) if r.get("val_iou"))


def ship(args: argparse.Namespace, rows: list[dict[str, object]], roots: list[Path]) -> None:
    """Package the fine-tuned run with the best validation IoU (Bubeneč; never the test city) as shipped weights;
    the runs are looked for in ``roots`` (the benchmark's output folders)."""
    from tomoformer.pretrained import ModelCard, package_checkpoint

    candidates = {
        (str(r["model"]), int(r["seed"])): next(
            root / f"ft_{r['model']}_s{r['seed']}"
            for root in roots
            if (root / f"ft_{r['model']}_s{r['seed']}").is_dir()
        )
        for r in rows
        if r["row"] == "fine-tuned"
    }
    (model, seed), run = max(candidates.items(), key=lambda item: best_val_iou(item[1]))
    figures: dict[str, object] = {"selected_by": "validation IoU on Bubenec (ray-traced), never Florence"}
    figures["val_iou_bubenec"] = round(best_val_iou(run), 4)
    for r in rows:
        if r["model"] == model and r["row"] == "fine-tuned" and int(r["seed"]) == seed:
            figures[f"florence_{r['test']}_iou"] = round(float(r["iou"]), 4)
    for test in TEST_SETS:
        values = [
            float(r["iou"]) for r in rows if r["model"] == model and r["row"] == "fine-tuned" and r["test"] == test
        ]
        figures[f"benchmark_florence_{test}_iou_mean_std"] = [
            round(statistics.mean(values), 4),
            round(statistics.stdev(values) if len(values) > 1 else 0.0, 4),
        ]
    card = ModelCard(
        name=args.ship,
        model=model,
        description=f"{model} for ray-traced or measured path-gain maps at ~2 m and 3.5 GHz (any T, any size)",
        cell_size_m=2.0,
        frequency_hz=3.5e9,
        trained_on=(
            "pretrained on the fast simulator (mixed v1+v2 cities and Helsinki/Finnish-town OSM footprints), "
            "fine-tuned on Sionna RT maps of Munich, Etoile, Helsinki and a Finnish town (OSM data (c) "
            "OpenStreetMap contributors, ODbL 1.0)"
        ),
        command=" ".join(["python", "benchmarks/realcity.py", *sys.argv[1:]]),
        figures=figures,
        licence="weights: the project's licence; training geometry: ODbL 1.0 (OpenStreetMap), Sionna RT scenes",
    )
    try:
        path = package_checkpoint(run / "checkpoints" / "best.ckpt", card, overwrite=args.overwrite_shipped)
    except OutputError as error:
        raise SystemExit(f"realcity: {error} (--overwrite-shipped replaces it)") from None
    print(f"shipped {run} as {path} ({path.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("rt_corpus"))
    parser.add_argument("--pre-data", help="comma-separated fast-simulator stores")
    parser.add_argument("--pre-val", type=Path, help="fast-simulator validation store")
    parser.add_argument(
        "--pre-runs", help="pretrained run folders instead, e.g. runs/zeroshot/runs/cities_real_{model}_s{seed}"
    )
    parser.add_argument("--models", default="tomoformer_tiny,unet")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pre-steps", type=int, default=3000)
    parser.add_argument("--ft-steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--crop", type=int, default=0, help="train on random N x N windows (0 = whole maps)")
    parser.add_argument("--train-args", default="", help="more train/finetune flags, e.g. '--sample-frames 8'")
    parser.add_argument("--out", type=Path, default=Path("runs/realcity"))
    parser.add_argument("--ship", metavar="NAME", help="package the best fine-tuned run (by validation IoU) as NAME")
    parser.add_argument(
        "--overwrite-shipped", action="store_true", help="--ship may replace a shipped model of the same name"
    )
    parser.add_argument("--no-threshold", dest="threshold", action="store_false", help="skip the fitted threshold")
    parser.add_argument("--combine", help="comma-separated results.csv files of runs split by model: one table")
    args = parser.parse_args()
    if args.combine:
        check_recorded(args.out / "results.csv", args.out / "results.md")
        args.out.mkdir(parents=True, exist_ok=True)
        csvs = [Path(path) for path in args.combine.split(",")]
        rows = read_csvs(csvs)
        write_results(rows, args.out)
        if args.ship:
            ship(args, rows, [path.parent for path in csvs])
        return
    if not args.pre_runs and not (args.pre_data and args.pre_val):
        parser.error("give --pre-data and --pre-val, or --pre-runs")
    args.models = args.models.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    check_recorded(args.out / "results.csv", args.out / "results.md")  # before hours of training, not after
    try:
        rows = run(args)
    except DataError as err:  # e.g. a split that would train or select on a test tile
        raise SystemExit(f"realcity: {err}") from None
    write_results(rows, args.out)
    if args.ship:
        ship(args, rows, [args.out])


if __name__ == "__main__":
    main()
