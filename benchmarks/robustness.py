"""Robustness benchmark: the shipped model, a trained U-Net and the fitted threshold across a grid of conditions,
each varied alone from a reference.

Models: ``tomoformer (realcity)``, the shipped weights (``tomoformer.pretrained``, used as shipped); ``unet``,
trained on simulated mixed-style cities of the reference condition with the accuracy benchmark's budget rules
(``benchmarks/accuracy.py``: learning rate chosen on validation IoU from ``--lrs``, continued past a winning edge,
then ``--seeds`` runs scored as mean ± sd); ``threshold``, fitted on the same training tiles (refitted without
transmitter positions for the ``no tx_pos`` row). The margin of a model is its IoU minus the threshold's IoU in the
same condition (same tiles, same maps).

Conditions (docs/robustness.md): T (1 ... 256: the first T maps of one simulation at the largest T), kept cells
(100, 30, 10, 3 %), noise (none; 4 dB Gaussian; Rayleigh fading in dB, 10 log10 of an Exp(1) power, 5.6 dB
spread), transmitter layout (inside, ring, rooftop, street), transmitter heights (1.5-60 m), terrain (flat, hills
up to 50 and 100 m), tracer settings (rays per transmitter, max depth, diffraction: ray-traced with ``--engine
sionna`` only, otherwise listed as not run) and no ``tx_pos``. Test tiles: ``--test-geometry`` (a ``tomoformer
geometry import`` store; never San Francisco) or procedural cities of their own seed. Training data is procedural
(never Florence or San Francisco: :func:`~tomoformer.data.heldout.refuse_named_city`).

Work (data, training runs) goes to ``--work`` and is reused when the settings match (refused otherwise); results to
``--out``: ``results.csv`` (one row per condition, model and seed), ``summary.csv``, ``results.md`` and
``heatmap.png`` (condition x model: IoU and margin over the threshold).

    OMP_NUM_THREADS=1 python benchmarks/robustness.py --size 32 --t-ref 8 --t-max 64 --n-train 96 --n-val 24 \\
        --n-test 12 --epochs 3 --lrs 1e-3,3e-3 --lr-extensions 0 --out benchmarks/results/robustness --overwrite
    python benchmarks/robustness.py --engine sionna --test-geometry geo/test.zarr --size 100 --t-ref 64 \\
        --t-max 256 --out runs/robustness_rt                                         # ray-traced, GPU-sized
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from accuracy import simulate_splits, sweep_lr, train_once, write_csv
from tomoformer.checkpoint import load_checkpoint
from tomoformer.data.datamodule import AugmentOptions, model_tx_pos
from tomoformer.data.format import open_dataset
from tomoformer.data.heldout import refuse_named_city
from tomoformer.errors import ConfigError, TomoFormerError
from tomoformer.evaluation.metrics import evaluate_predictions
from tomoformer.io import write_text_atomic
from tomoformer.models.registry import create_model
from tomoformer.outputs import check_output, claim_output
from tomoformer.sim.config import SimConfig
from tomoformer.sim.simulate import simulate_samples

# "all building" predicts a building in every cell: its IoU is the tiles' building fraction (a floor to beat).
MODELS = ("tomoformer (realcity)", "unet", "threshold", "all building")
MARGIN_MODELS = tuple(m for m in MODELS if m != "threshold")
SHIPPED = "realcity"
# City names a store must not carry: Florence is a test city only, San Francisco is out of everything.
SCENARIO = "dense"  # accuracy.SCENARIOS entry of the training data: the reference condition


@dataclass(frozen=True)
class Condition:
    """One cell of the grid: a SimConfig override (or a post-processing) applied alone to the reference."""

    family: str
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    frames: int | None = None  # T: the first ``frames`` maps of the simulation at --t-max
    fading: bool = False  # Rayleigh fading in dB on noise-free maps
    tx_pos: bool = True
    ray: dict[str, Any] | None = None  # RayOptions of a tracer condition (engine sionna only)


def conditions(t_ref: int, t_max: int) -> list[Condition]:
    """The grid: every condition varies one thing from the reference (T = t_ref, every cell kept, the simulator's
    default noise, transmitters outdoors inside the tile at 1.5-30 m, flat ground, default tracer)."""
    ts = [2**k for k in range(int(np.log2(t_max)) + 1)]
    grid = [Condition("reference", f"T={t_ref}", frames=t_ref)]
    grid += [Condition("T", f"T={t}", frames=t) for t in ts if t != t_ref]
    grid += [Condition("kept", f"{p}% kept", {"measured_fraction": p / 100}) for p in (30, 10, 3)]
    grid += [
        Condition("noise", "no noise", {"noise_std_db": 0.0}),
        Condition("noise", "4 dB Gaussian", {"noise_std_db": 4.0}),
        Condition("noise", "Rayleigh (dB)", {"noise_std_db": 0.0}, fading=True),
    ]
    layouts = ("inside", "ring", "rooftop", "street")
    grid += [Condition("layout", layout, {"tx_layout": layout}) for layout in layouts]
    grid += [
        Condition("heights", f"tx {lo:g}-{hi:g} m", {"tx_height_min_m": lo, "tx_height_max_m": hi})
        for lo, hi in ((1.5, 3.0), (10.0, 30.0), (30.0, 60.0), (1.5, 60.0))
    ]
    grid += [Condition("terrain", f"hills {h} m", {"terrain_max_m": float(h)}) for h in (50, 100)]
    grid += [
        Condition("tracer", "rays 1e5", ray={"samples_per_tx": 100_000}),
        Condition("tracer", "max depth 2", ray={"max_depth": 2}),
        Condition("tracer", "max depth 5", ray={"max_depth": 5}),
        Condition("tracer", "no diffraction", ray={"diffraction": False}),
    ]
    grid += [Condition("tx_pos", "no tx_pos", tx_pos=False)]
    return grid


def store_names(path: Path) -> str:
    """A store's path and attributes as one text (what :func:`~tomoformer.data.heldout.refuse_named_city` reads)."""
    source = open_dataset(path)
    try:
        return f"{path} {json.dumps(source.attrs, default=str, sort_keys=True)}"
    finally:
        source.close()


def rayleigh_db(signals: np.ndarray, seed: int) -> np.ndarray:
    """signals float32 [N, T, H, W] dB plus Rayleigh fading in dB (10 log10 of an Exp(1) power: mean -2.5 dB,
    sd 5.57 dB), independent per cell and map; NaN stays NaN."""
    power = np.random.default_rng(seed).exponential(1.0, size=signals.shape)
    return (signals + 10 * np.log10(np.maximum(power, 1e-12))).astype(np.float32)


def test_config(args: argparse.Namespace, cond: Condition) -> SimConfig:
    """The condition's simulator config: the training scenario's at the test size, plus its overrides."""
    frames = args.t_max if cond.family == "T" or cond.family == "reference" else args.t_ref
    return SimConfig.from_dict({"size": args.size, "frames": frames, "style": "mixed", **cond.overrides})


def test_data(args: argparse.Namespace, cond: Condition, geometry: Any, cache: dict[str, Any]) -> dict[str, np.ndarray]:
    """Test arrays of a condition (signals [N, T, H, W] dB, buildings, tx_pos) on the same tiles for every
    condition (procedural cities of seed --data-seed + 30,000, or the --test-geometry tiles)."""
    config = test_config(args, cond)
    key = json.dumps([config.to_dict(), cond.ray], sort_keys=True)
    if key not in cache:
        seed = args.data_seed + 30_000
        if args.engine == "sionna":
            from tomoformer.sim.sionna import RayOptions, sionna_samples

            options = RayOptions(**(cond.ray or {}))
            cache[key] = sionna_samples(config, seed, 0, args.n_test, options=options, geometry=geometry)
        else:
            cache[key] = simulate_samples(config, seed, 0, args.n_test, geometry=geometry)
    data = dict(cache[key])
    if cond.frames is not None:
        data["signals"], data["tx_pos"] = data["signals"][:, : cond.frames], data["tx_pos"][:, : cond.frames]
    if cond.fading:
        data["signals"] = rayleigh_db(data["signals"], args.data_seed + 40_000)
    return data


@torch.no_grad()
def predict(model: torch.nn.Module, data: dict[str, np.ndarray], with_tx: bool, batch: int = 4) -> np.ndarray:
    """Building probabilities [N, H, W] of ``model`` on the arrays (tx_pos in the model convention, or None)."""
    model = model.eval()
    n = len(data["signals"])
    defaults = SimConfig()
    tx = model_tx_pos(data["tx_pos"], defaults.cell_size_m, defaults.rx_height_m) if with_tx else None
    out = []
    for i in range(0, n, batch):
        signals = torch.from_numpy(np.ascontiguousarray(data["signals"][i : i + batch], np.float32))
        logits = model(signals, tx[i : i + batch] if tx is not None else None)
        out.append(torch.sigmoid(logits.float()).numpy())
    return np.concatenate(out)


def fit_threshold(train: Path, with_tx: bool, batch: int = 8, limit: int = 64) -> torch.nn.Module:
    """The threshold fitted on the first ``limit`` batches of the training store (tx_pos dropped if not with_tx)."""
    from torch.utils.data import DataLoader

    from tomoformer.data.datamodule import SignalMapDataset, collate

    source = open_dataset(train, require_buildings=True)
    loader = DataLoader(SignalMapDataset(source), batch_size=batch, collate_fn=collate)
    batches = [b for _, b in zip(range(limit), loader, strict=False)]
    if not with_tx:
        batches = [{k: v for k, v in b.items() if k != "tx_pos"} for b in batches]
    model = create_model("threshold")
    model.fit(batches)
    return model.eval()


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the training runs in --work depend on (a work folder made with other settings is refused)."""
    keys = ("size", "t_ref", "n_train", "n_val", "epochs", "batch_size", "lrs", "lr_extensions", "data_seed")
    return {k: getattr(args, k) for k in keys} | {"max_floor_fraction": args.max_floor_fraction}


def check_work(work: Path, args: argparse.Namespace) -> None:
    """Refuse a --work folder whose recorded settings differ; record them in a new one."""
    path = work / "settings.json"
    if path.exists():
        stored = json.loads(path.read_text())
        differing = sorted(k for k in set(stored) | set(settings(args)) if stored.get(k) != settings(args).get(k))
        if differing:
            raise ConfigError(f"--work {work} was made with other settings ({', '.join(differing)}); use another")
    else:
        work.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(settings(args), indent=1))


def train_models(args: argparse.Namespace, work: Path) -> tuple[dict[str, list[torch.nn.Module]], dict[str, Any]]:
    """unet (one model per seed) and the threshold, trained/fitted on the reference scenario's training data."""
    acc = argparse.Namespace(
        size=args.size,
        frames=args.t_ref,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=1,  # the accuracy splits' test store is not used here (the conditions simulate their own)
        data_seed=args.data_seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_floor_fraction=args.max_floor_fraction,
    )
    paths = simulate_splits(acc, SCENARIO, work, cuda=False)
    for role in ("train", "val"):
        refuse_named_city(store_names(paths[role]), role)
    done_path = work / "runs.json"
    done: dict[str, dict[str, Any]] = json.loads(done_path.read_text()) if done_path.exists() else {}
    seeds = [int(s) for s in args.seeds.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]

    def run(lr: float, seed: int) -> dict[str, Any]:
        return train_once(acc, SCENARIO, work, paths, done, "unet", lr, seed, False)

    tried = sweep_lr(lambda lr: run(lr, seeds[0])["val_iou"], lrs, args.lr_extensions)
    lr = max(tried, key=lambda v: tried[v])
    unets = [load_checkpoint(run(lr, seed)["checkpoint"]).model for seed in seeds]
    thresholds = [fit_threshold(paths["train"], True), fit_threshold(paths["train"], False)]
    info = {"unet_lr": lr, "lr_sweep": tried, "threshold": thresholds[0].describe()}
    return {"unet": unets, "threshold": thresholds}, info


def not_run(cond: Condition, engine: str) -> str:
    """Why ``engine`` cannot make ``cond`` ('' when it can)."""
    if cond.ray is not None and engine != "sionna":
        return "not run (fast engine)"
    return ""


def score(args: argparse.Namespace, models: dict[str, list[torch.nn.Module]], geometry: Any) -> list[dict[str, Any]]:
    """One row per condition, model and seed: IoU on the condition's test tiles (status 'not run' where the
    engine cannot make the condition)."""
    from tomoformer.pretrained import card

    shipped = load_checkpoint(str(card(SHIPPED).weights)).model
    rows: list[dict[str, Any]] = []
    cache: dict[str, Any] = {}
    for cond in conditions(args.t_ref, args.t_max):
        base = {"family": cond.family, "condition": cond.name}
        skip = not_run(cond, args.engine)
        if skip:
            rows += [base | {"model": m, "seed": "", "iou": float("nan"), "status": skip} for m in MODELS]
            continue
        data = test_data(args, cond, geometry, cache)
        truth = data["buildings"]
        fitted = models["threshold"][0 if cond.tx_pos else 1]
        runs = [(MODELS[0], "", shipped)] + [
            ("unet", s, m) for s, m in zip(args.seeds.split(","), models["unet"], strict=True)
        ]
        runs.append(("threshold", "", fitted))
        for name, seed, model in runs:
            iou = evaluate_predictions(predict(model, data, cond.tx_pos), truth)["iou"]
            rows.append(base | {"model": name, "seed": seed, "iou": float(iou), "status": "ok"})
        everywhere = evaluate_predictions(np.ones(truth.shape, np.float32), truth)["iou"]
        rows.append(base | {"model": MODELS[-1], "seed": "", "iou": float(everywhere), "status": "ok"})
        shown = " ".join(f"{r['iou']:.3f}" for r in rows[-len(runs) - 1 :])
        print(f"{cond.family:9s} {cond.name:16s} {shown}", flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± sd over seeds per condition and model, and the margin over the threshold in the same condition."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["family"], row["condition"], row["model"]), []).append(row)
    thresholds = {(f, c): rs[0]["iou"] for (f, c, m), rs in groups.items() if m == "threshold"}
    out = []
    for (family, cond, model), rs in groups.items():
        ious = [r["iou"] for r in rs]
        mean = statistics.fmean(ious)
        out.append(
            {
                "family": family,
                "condition": cond,
                "model": model,
                "runs": len(rs),
                "iou_mean": mean,
                "iou_sd": statistics.stdev(ious) if len(ious) > 1 else 0.0,
                "margin_over_threshold": mean - thresholds[(family, cond)],
                "status": rs[0]["status"],
            }
        )
    return out


def markdown(summary: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any], command: str) -> str:
    """results.md: the command, the setting, and the grid (IoU mean ± sd and margin over the threshold)."""
    engine = "fast simulator (tomoformer.sim)" if args.engine == "fast" else "Sionna RT"
    tiles = f"--test-geometry {args.test_geometry}" if args.test_geometry else "procedural mixed-style cities"
    lines = [
        f"Command: `{command}`",
        "",
        f"Engine: {engine}; {args.n_test} test tiles of {args.size} x {args.size} cells (2 m) from {tiles}; "
        f"reference T = {args.t_ref}. unet: {len(args.seeds.split(','))} seeds, lr {info['unet_lr']:g} "
        f"(chosen on validation IoU from {', '.join(f'{k:g}' for k in sorted(info['lr_sweep']))}), "
        f"{args.epochs} epochs on {args.n_train} training tiles. {info['threshold']}.",
        "",
        (
            "These are fast-simulator figures at the size above: how the models move across conditions, not their "
            "accuracy on ray-traced or measured maps."
            if args.engine == "fast"
            else "Ray-traced figures (Sionna RT)."
        ),
        "Margin: the model's IoU minus the threshold's in the same condition; `all building` predicts a building "
        "everywhere (its IoU is the building fraction).",
        "",
        "| family | condition | " + " | ".join(f"{m} IoU | margin" for m in MODELS) + " |",
        "|---|---|" + "---|---|" * len(MODELS),
    ]
    table: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in summary:
        table.setdefault((row["family"], row["condition"]), {})[row["model"]] = row
    for (family, cond), by_model in table.items():
        cells = []
        for m in MODELS:
            r = by_model[m]
            if r["status"] != "ok":
                cells += [r["status"], "-"]
                continue
            sd = f" ± {r['iou_sd']:.3f}" if r["runs"] > 1 else ""
            margin = "-" if m == "threshold" else f"{r['margin_over_threshold']:+.3f}"
            cells += [f"{r['iou_mean']:.3f}{sd}", margin]
        lines.append(f"| {family} | {cond} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def heatmap(summary: list[dict[str, Any]], path: Path, title: str) -> None:
    """heatmap.png: conditions (rows) x models (columns), IoU on the left, margin over the threshold on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(dict.fromkeys((r["family"], r["condition"]) for r in summary))
    iou = np.full((len(conds), len(MODELS)), np.nan)
    margin = np.full((len(conds), len(MARGIN_MODELS)), np.nan)
    for r in summary:
        i = conds.index((r["family"], r["condition"]))
        iou[i, MODELS.index(r["model"])] = r["iou_mean"]
        if r["model"] in MARGIN_MODELS:
            margin[i, MARGIN_MODELS.index(r["model"])] = r["margin_over_threshold"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.32 * len(conds) + 1.6), width_ratios=[1, 1])
    span = max(0.05, float(np.nanmax(np.abs(margin)))) if np.isfinite(margin).any() else 0.1
    for ax, values, cmap, lim, label, cols in (
        (axes[0], iou, "viridis", (0, 1), "IoU", MODELS),
        (axes[1], margin, "RdBu", (-span, span), "IoU - threshold IoU", MARGIN_MODELS),
    ):
        im = ax.imshow(values, cmap=cmap, vmin=lim[0], vmax=lim[1], aspect="auto")
        ax.set_xticks(range(len(cols)), [c.replace(" (", "\n(") for c in cols], fontsize=7)
        ax.set_yticks(range(len(conds)), [f"{f}: {c}" for f, c in conds], fontsize=7)
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=6)
        fig.colorbar(im, ax=ax, label=label, shrink=0.6)
    axes[1].set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/robustness")
    parser.add_argument("--work", default="runs/robustness", help="data and training runs (reused)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--engine", choices=("fast", "sionna"), default="fast")
    parser.add_argument("--test-geometry", default=None, help="geometry store of the test tiles (default: procedural)")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--t-ref", type=int, default=64)
    parser.add_argument("--t-max", type=int, default=256)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-val", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lrs", default="3e-4,1e-3,3e-3")
    parser.add_argument("--lr-extensions", type=int, default=2)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--max-floor-fraction", type=float, default=AugmentOptions.max_floor_fraction)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        check_output(args.out, overwrite=args.overwrite, folder=True)
        if args.t_max < args.t_ref or args.t_ref < 1:
            raise ConfigError(f"need 1 <= --t-ref <= --t-max, got {args.t_ref}, {args.t_max}")
        geometry = None
        if args.test_geometry:
            from tomoformer.geometry.source import GeometrySource

            geometry = GeometrySource(args.test_geometry)
            refuse_named_city(f"{args.test_geometry} {json.dumps(geometry.attrs, default=str)}", "test")
        work = Path(args.work)
        check_work(work, args)
        models, info = train_models(args, work)
        rows = score(args, models, geometry)
    except TomoFormerError as err:
        print(f"robustness: {err}", file=sys.stderr)
        return 2
    summary = summarise(rows)
    command = "python benchmarks/robustness.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(summary, args, info, command.strip())
    label = "fast simulator" if args.engine == "fast" else "Sionna RT"
    with claim_output(args.out, overwrite=args.overwrite, command="robustness", folder=True) as out:
        assert out is not None
        write_csv(out / "results.csv", rows)
        write_csv(out / "summary.csv", summary)
        write_text_atomic(out / "results.md", text)
        heatmap(
            summary, out / "heatmap.png", f"{label}, {args.n_test} tiles of {args.size}x{args.size}, T_ref={args.t_ref}"
        )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
