"""Active transmitter placement: building-map IoU against the number of transmitters, planner vs random vs coverage.

On labelled tiles with many transmitter maps each (``--data``: any store with ``buildings``, ``tx_pos`` and at least
``--start + --add`` frames; fast-simulator tiles by default, ray-traced ones when given), every run starts from
``--start`` transmitters drawn at random (per seed and tile) and adds ``--step`` at a time, up to ``--add`` more:

- ``planner``: ``tomoformer plan``'s selection (tasks/planning.py) among the tile's unused transmitters, re-planned
  after each step on the model's map from the frames measured so far;
- ``random``: the unused transmitters in a random order;
- ``farthest``: farthest-point coverage, each new transmitter the unused one farthest (row, col) from those chosen.

The model (calibrated, ``--pretrained`` or ``--checkpoint``) maps each tile from the chosen frames; the score is the
pixel IoU over all tiles (micro average). Over ``--seeds``: mean and sample standard deviation per count, plus the
IoU of all the tile's frames. Writes ``results.csv`` (one row per seed, strategy, count), ``summary.csv``,
``summary.md`` and ``active.png`` into ``--out``.

    OMP_NUM_THREADS=1 python benchmarks/active.py --n-tiles 8 --size 48 --out benchmarks/results/active
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from accuracy import write_csv
from tomoformer.checkpoint import load_checkpoint
from tomoformer.cli import main as tomoformer
from tomoformer.data.datamodule import model_tx_pos
from tomoformer.data.format import open_dataset
from tomoformer.evaluation.figures import save_figure
from tomoformer.evaluation.metrics import BinaryCounts
from tomoformer.io import write_text_atomic
from tomoformer.pretrained import card
from tomoformer.tasks.planning import NOTHING_RECEIVED_DB, PlanOptions, plan_sample

STRATEGIES = ("planner", "random", "farthest")


def simulate_tiles(path: Path, n: int, size: int, frames: int, seed: int) -> None:
    """Fast-simulator tiles with ``frames`` transmitter maps each (skipped when complete)."""
    argv = ["simulate", "--out", str(path), "--n", str(n), "--size", str(size), "--frames", str(frames)]
    if tomoformer([*argv, "--seed", str(seed), "--resume", "--no-progress"]) != 0:
        raise SystemExit(f"active: could not simulate {path}")


@torch.no_grad()
def probabilities(model: torch.nn.Module, signals: np.ndarray, tx: np.ndarray, batch: int = 8) -> np.ndarray:
    """Building probabilities ``[N, H, W]`` of tiles ``signals [N, t, H, W]`` with ``tx [N, t, 3]`` (model units)."""
    out = []
    for i in range(0, len(signals), batch):
        s = torch.from_numpy(signals[i : i + batch].astype(np.float32))
        out.append(torch.sigmoid(model(s, torch.from_numpy(tx[i : i + batch])).float()).numpy())
    return np.concatenate(out)


def farthest_order(positions: np.ndarray, start: list[int], pool: list[int], count: int) -> list[int]:
    """``count`` indices of ``pool``, each the one farthest (row, col) from the chosen so far (``start`` first)."""
    chosen = list(start)
    rest = list(pool)
    picks = []
    for _ in range(min(count, len(rest))):
        d = np.linalg.norm(positions[rest][:, None, :2] - positions[chosen][None, :, :2], axis=-1).min(axis=1)
        best = rest.pop(int(np.argmax(d)))
        chosen.append(best)
        picks.append(best)
    return picks


def run_seed(model: torch.nn.Module, data: dict[str, Any], seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """IoU per strategy and transmitter count for one seed."""
    signals, tx_raw, tx_model, truth, attrs = (
        data["signals"],
        data["tx"],
        data["tx_model"],
        data["truth"],
        data["attrs"],
    )
    n_tiles, n_frames = signals.shape[:2]
    counts = list(range(args.start, args.start + args.add + 1, args.step))
    starts, pools = [], []
    for i in range(n_tiles):
        rng = np.random.default_rng([seed, i])
        order = rng.permutation(n_frames).tolist()
        starts.append(order[: args.start])
        pools.append(order[args.start :])  # the random strategy's order, too
    orders: dict[str, list[list[int]]] = {
        "random": [starts[i] + pools[i][: args.add] for i in range(n_tiles)],
        "farthest": [starts[i] + farthest_order(tx_raw[i], starts[i], pools[i], args.add) for i in range(n_tiles)],
        "planner": [list(starts[i]) for i in range(n_tiles)],
    }
    options = dataclasses.replace(args.plan_options, seed=seed)
    rows = []
    for strategy in args.strategies:
        for count in counts:
            chosen = [order[:count] for order in orders[strategy]]
            idx = np.array(chosen)
            frames = np.take_along_axis(signals, idx[:, :, None, None], axis=1)
            p = probabilities(model, frames, np.take_along_axis(tx_model, idx[:, :, None], axis=1))
            iou = BinaryCounts.from_masks(p > 0.5, truth).metrics()["iou"]
            rows.append({"seed": seed, "strategy": strategy, "transmitters": count, "iou": iou})
            if strategy == "planner" and count < counts[-1]:
                for i in range(n_tiles):
                    used = set(orders["planner"][i])
                    rest = [j for j in range(n_frames) if j not in used]
                    measured = np.isfinite(frames[i])
                    floor = float(np.min(frames[i][measured])) if measured.any() else NOTHING_RECEIVED_DB
                    floor = max(floor, args.floor_db) if args.floor_db is not None else floor
                    reference = (
                        float(np.quantile(frames[i][measured], options.lit_quantile)) if measured.any() else None
                    )
                    plan = plan_sample(
                        p[i],
                        tx_raw[i][rest],
                        min(args.step, len(rest)),
                        receivers=measured.any(axis=0),
                        floor_db=max(floor, NOTHING_RECEIVED_DB),
                        reference_db=reference,
                        cell_size_m=attrs["cell_size_m"],
                        frequency_hz=attrs["frequency_hz"],
                        rx_height_m=attrs["rx_height_m"],
                        options=options,
                    )
                    orders["planner"][i] += [rest[c] for c in plan.chosen]
    return rows


def summarise(rows: list[dict[str, Any]], all_iou: float) -> list[dict[str, Any]]:
    out = []
    for strategy in sorted({r["strategy"] for r in rows}, key=STRATEGIES.index):
        counts = sorted({r["transmitters"] for r in rows if r["strategy"] == strategy})
        for count in counts:
            values = [r["iou"] for r in rows if r["strategy"] == strategy and r["transmitters"] == count]
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            out.append({"strategy": strategy, "transmitters": count, "iou_mean": statistics.mean(values), "iou_sd": sd})
    out.append({"strategy": "all frames", "transmitters": -1, "iou_mean": all_iou, "iou_sd": float("nan")})
    return out


def figure(summary: list[dict[str, Any]], all_iou: float, n_all: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for strategy, colour in zip(STRATEGIES, ("#2ca25f", "#636363", "#3182bd"), strict=True):
        pts = [r for r in summary if r["strategy"] == strategy]
        if not pts:
            continue
        x = np.array([r["transmitters"] for r in pts])
        y = np.array([r["iou_mean"] for r in pts])
        sd = np.nan_to_num(np.array([r["iou_sd"] for r in pts]))
        ax.plot(x, y, marker="o", markersize=3, color=colour, label=strategy)
        ax.fill_between(x, y - sd, y + sd, color=colour, alpha=0.15)
    ax.axhline(all_iou, color="#e6550d", linestyle="--", linewidth=1, label=f"all {n_all} transmitters")
    ax.set_xlabel("transmitters")
    ax.set_ylabel("IoU (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def markdown(summary: list[dict[str, Any]], all_iou: float, n_all: int, args: argparse.Namespace) -> str:
    counts = sorted({r["transmitters"] for r in summary if r["transmitters"] > 0})
    table = {(r["strategy"], r["transmitters"]): r for r in summary}
    strategies = args.strategies
    lines = [
        f"IoU against transmitters ({args.data_label}; mean ± sample sd over seeds {args.seeds};",
        f"planner options {args.plan_options}, floor {args.floor_db}):",
        "",
        "| transmitters | " + " | ".join(strategies) + " |",
        "|---" * (1 + len(strategies)) + "|",
    ]
    for c in counts:
        cells = [f"{table[(s, c)]['iou_mean']:.3f} ± {table[(s, c)]['iou_sd']:.3f}" for s in strategies]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines.append(f"| all {n_all} | {all_iou:.3f} |" + " |" * (len(strategies) - 1))
    if "planner" in strategies:
        reach = [c for c in counts if table[("planner", c)]["iou_mean"] >= all_iou]
        found = reach[0] if reach else f"not within {counts[-1]}"
        lines += ["", f"planner reaches the all-{n_all} IoU with: {found}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="labelled store with many frames per tile (default: simulate one)")
    parser.add_argument("--n-tiles", type=int, default=8)
    parser.add_argument("--size", type=int, default=48, help="tile size when simulating")
    parser.add_argument("--frames", type=int, default=64, help="frames per tile when simulating")
    parser.add_argument("--sim-seed", type=int, default=424242)
    parser.add_argument("--pretrained", default="realcity")
    parser.add_argument("--checkpoint", help="use this checkpoint instead of --pretrained")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--start", type=int, default=4)
    parser.add_argument("--add", type=int, default=28)
    parser.add_argument("--step", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/results/active")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--plan", action="append", default=[], metavar="KEY=VALUE", help="a PlanOptions field")
    parser.add_argument("--floor-db", type=float, help="planner: nothing is received below this level (dB)")
    args = parser.parse_args()
    args.strategies = [s for s in STRATEGIES if s in args.strategies.split(",")]
    fields = {f.name: f.type for f in dataclasses.fields(PlanOptions)}
    kinds = {"int": int, "float": float, "str": str}
    values = {k: kinds[fields[k]](v) for k, v in (item.split("=", 1) for item in args.plan)}
    args.plan_options = PlanOptions(**values)
    torch.manual_seed(0)
    out = Path(args.out)
    if args.data is None:
        args.data = str(Path("runs/active") / f"tiles_{args.n_tiles}x{args.size}_s{args.sim_seed}.zarr")
        simulate_tiles(Path(args.data), args.n_tiles, args.size, args.frames, args.sim_seed)
    args.data_label = f"first {args.n_tiles} tiles of {args.data}"
    loaded = load_checkpoint(args.checkpoint or card(args.pretrained).weights)
    model = loaded.calibrated().float().eval()
    with open_dataset(args.data, require_buildings=True) as source:
        n = min(args.n_tiles, len(source))
        tx = source.read("tx_pos", slice(0, n)).astype(np.float32)
        data = {
            "signals": source.read("signals", slice(0, n)).astype(np.float32),
            "tx": tx,
            "tx_model": model_tx_pos(tx, source.cell_size_m, source.rx_height_m).numpy(),
            "truth": source.read("buildings", slice(0, n)) > 0,
            "attrs": {
                "cell_size_m": source.cell_size_m,
                "rx_height_m": source.rx_height_m,
                "frequency_hz": float(source.attrs.get("frequency_hz", 3.5e9)),
            },
        }
    n_all = data["signals"].shape[1]
    if n_all < args.start + args.add:
        raise SystemExit(f"active: {args.data} has {n_all} frames per tile, fewer than --start + --add")
    start = time.perf_counter()
    p_all = probabilities(model, data["signals"], data["tx_model"])
    all_iou = BinaryCounts.from_masks(p_all > 0.5, data["truth"]).metrics()["iou"]
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows += run_seed(model, data, seed, args)
        print(f"seed {seed} done after {time.perf_counter() - start:.0f} s")
    summary = summarise(rows, all_iou)
    write_csv(out / "results.csv", rows)
    write_csv(out / "summary.csv", summary)
    text = markdown(summary, all_iou, n_all, args)
    write_text_atomic(out / "summary.md", text)
    save_figure(figure(summary, all_iou, n_all), out / "active.png")
    print(text)


if __name__ == "__main__":
    main()
