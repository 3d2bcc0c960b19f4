"""IoU against the number of maps T on held-out tiles of the fast simulator: does a map improve as frames are added?

Trains ``tomoformer_tiny`` and ``unet`` on simulated tiles with the frame count of every batch drawn log-uniformly
(``--sample-frames``, default 1-128, capped at the frames a tile has), fits the ``threshold`` baseline on the same
training tiles at each T, and prints the held-out IoU (pooled over the test tiles' cells) at every T of ``--T``,
over ``--seeds`` (mean and sample sd). The test tiles are simulated from their own seed, so no test tile is ever
a training tile. One core, a few minutes at the defaults::

    python benchmarks/t_curve.py --out benchmarks/results/t_curve --overwrite

Writes ``results.csv`` (model, seed, T, iou) and ``results.md`` (the table) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tomoformer.data.datamodule import model_tx_pos
from tomoformer.data.transforms import apply_d4, draw_frame_count, random_frame_subset
from tomoformer.errors import TomoFormerError
from tomoformer.io import write_text_atomic
from tomoformer.models.classical import ThresholdModel
from tomoformer.models.registry import create_model
from tomoformer.outputs import check_output, claim_output
from tomoformer.sim.config import SimConfig
from tomoformer.sim.simulate import simulate_samples

DEFAULT_T = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def simulate(size: int, frames: int, n: int, seed: int) -> dict[str, torch.Tensor]:
    """``n`` fast-simulator tiles of ``size`` x ``size`` cells with ``frames`` maps each (seeded by ``seed``):
    signals [n, T, H, W] dB, tx_pos [n, T, 3] model cells, buildings [n, H, W] float."""
    config = SimConfig.from_dict({"size": size, "frames": frames, "style": "mixed", "n_angles": 90})
    raw = simulate_samples(config, seed, 0, n)
    return {
        "signals": torch.from_numpy(raw["signals"]),
        "tx_pos": model_tx_pos(raw["tx_pos"], config.cell_size_m, config.rx_height_m),
        "buildings": torch.from_numpy(raw["buildings"].astype(np.float32)),
    }


def iou(logits: torch.Tensor, target: torch.Tensor) -> float:
    """IoU of ``logits > 0`` with ``target > 0.5``, pooled over every cell."""
    pred, truth = logits > 0, target > 0.5
    union = (pred | truth).sum()
    return float((pred & truth).sum() / union) if union > 0 else 1.0


def train(
    name: str,
    data: dict[str, torch.Tensor],
    steps: int,
    seed: int,
    frames: tuple[int, int],
    sampling: str = "log-uniform",
    batch: int = 8,
    lr: float = 2e-3,
    **kwargs: Any,
) -> torch.nn.Module:
    """Train model ``name`` with AdamW (linear decay), BCE loss, a random D4 symmetry per batch and one frame count
    per batch drawn in ``frames`` (``sampling``), capped at the frames available; seeded by ``seed``."""
    torch.manual_seed(seed)
    model = create_model(name, **kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)
    gen = torch.Generator().manual_seed(seed)
    n, available = data["signals"].shape[:2]
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=gen)
        t = draw_frame_count(frames[0], min(frames[1], available), sampling, gen)
        signals, tx = random_frame_subset(data["signals"][idx], data["tx_pos"][idx], t, gen)
        k = int(torch.randint(0, 8, (1,), generator=gen))
        signals, buildings, tx = apply_d4(signals, data["buildings"][idx], tx, k)
        loss = F.binary_cross_entropy_with_logits(model(signals, tx), buildings)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    return model.eval()


def curve(model: torch.nn.Module, test: dict[str, torch.Tensor], ts: tuple[int, ...]) -> dict[int, float]:
    """Held-out IoU at every T in ``ts`` (the first T maps of each test tile; they are random transmitters)."""
    out = {}
    with torch.no_grad():
        for t in ts:
            logits = torch.cat(
                [
                    model(test["signals"][i : i + 4, :t], test["tx_pos"][i : i + 4, :t])
                    for i in range(0, len(test["signals"]), 4)
                ]
            )
            out[t] = iou(logits, test["buildings"])
    return out


def threshold_curve(train_set: dict[str, torch.Tensor], test: dict[str, torch.Tensor], ts: tuple[int, ...]) -> dict:
    """The ``threshold`` baseline fitted on the training tiles at each T (its cut on the best signal moves with T),
    evaluated on the test tiles at that T."""
    out = {}
    for t in ts:
        model = ThresholdModel()
        model.fit([{k: (v[:, :t] if k != "buildings" else v) for k, v in train_set.items()}])
        with torch.no_grad():
            out[t] = iou(model(test["signals"][:, :t], test["tx_pos"][:, :t]), test["buildings"])
    return out


def summarise(rows: list[dict[str, Any]], ts: tuple[int, ...]) -> list[dict[str, Any]]:
    """Mean and sample sd of IoU per (model, T)."""
    table = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for t in ts:
            values = [r["iou"] for r in rows if r["model"] == model and r["T"] == t]
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            table.append({"model": model, "T": t, "mean": statistics.fmean(values), "sd": sd, "n": len(values)})
    return table


def markdown(table: list[dict[str, Any]], ts: tuple[int, ...], command: str) -> str:
    models = list(dict.fromkeys(r["model"] for r in table))
    cell = {(r["model"], r["T"]): r for r in table}
    lines = [
        "# Held-out IoU against the number of maps T (fast simulator)",
        "",
        f"Command: `{command}`",
        "",
        "Mean ± sample sd over seeds; IoU pooled over the cells of the held-out tiles; the first T maps of each tile.",
        "",
        "| model | " + " | ".join(f"T={t}" for t in ts) + " |",
        "|---|" + "---|" * len(ts),
    ]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(f"{cell[m, t]['mean']:.3f} ± {cell[m, t]['sd']:.3f}" for t in ts) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(rows[0])
    writer.writerows([f"{v:.6g}" if isinstance(v, float) else str(v) for v in row.values()] for row in rows)
    write_text_atomic(path, buffer.getvalue())


def parse_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        values = (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A-B, got {text!r}") from None
    if not 1 <= values[0] <= values[1]:
        raise argparse.ArgumentTypeError(f"range {text!r} needs 1 <= A <= B")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/t_curve")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--size", type=int, default=24, help="tile side, cells")
    parser.add_argument("--train-tiles", type=int, default=64)
    parser.add_argument("--test-tiles", type=int, default=16)
    parser.add_argument("--train-frames", type=int, default=128, help="maps simulated per training tile")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sample-frames", type=parse_range, default=(1, 128), help="log-uniform range A-B")
    parser.add_argument("--sampling", choices=("log-uniform", "uniform"), default="log-uniform")
    parser.add_argument("--frame-stats", choices=("stable", "max"), default="stable")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default="tomoformer_tiny,unet,threshold")
    parser.add_argument("--T", dest="ts", default=",".join(map(str, DEFAULT_T)))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        check_output(args.out, overwrite=args.overwrite, folder=True)
        ts = tuple(int(t) for t in args.ts.split(","))
        seeds = [int(s) for s in args.seeds.split(",")]
    except (TomoFormerError, ValueError) as err:
        print(f"t_curve: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    test = simulate(args.size, max(ts), args.test_tiles, 10_000)  # its own seed: never a training tile
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        train_set = simulate(args.size, args.train_frames, args.train_tiles, seed)
        for name in args.models.split(","):
            start = time.time()
            if name == "threshold":
                result = threshold_curve(train_set, test, ts)
            else:
                model = train(
                    name,
                    train_set,
                    args.steps,
                    seed,
                    args.sample_frames,
                    args.sampling,
                    frame_stats=args.frame_stats,
                )
                result = curve(model, test, ts)
            rows += [{"model": name, "seed": seed, "T": t, "iou": v} for t, v in result.items()]
            shown = " ".join(f"{t}:{v:.3f}" for t, v in result.items())
            print(f"seed {seed} {name} ({time.time() - start:.0f} s): {shown}", flush=True)
    command = "python benchmarks/t_curve.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(summarise(rows, ts), ts, command.strip())
    with claim_output(args.out, overwrite=args.overwrite, command="t_curve", folder=True) as out:
        assert out is not None
        write_csv(out / "results.csv", rows)
        write_text_atomic(out / "results.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
