"""Calibration and per-cell uncertainty of a model: which uncertainty ranks the wrong cells first.

On labelled data (``--data``; default: fast-simulator tiles, ``--n`` validation and ``--n`` test tiles of different
seeds), the temperature is fitted on the validation tiles only; on the test tiles the script reports calibration
(ECE 15 bins, Brier, NLL) before and after, and for each uncertainty method the AUROC of the uncertainty as a
detector of the wrong cells of the map (the single-pass calibrated map at 0.5) and the risk-coverage curve
(IoU and accuracy on the most certain x % of cells). Methods: the binary entropy of the single-pass probability,
and of the mean over test-time views (D4 symmetries, optionally each on a random subset of the frames).

Writes ``calibration.csv``, ``uncertainty.csv``, ``risk_coverage.csv``, ``summary.md`` and ``risk_coverage.png``.

    OMP_NUM_THREADS=1 python benchmarks/uncertainty.py --out benchmarks/results/uncertainty
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from accuracy import write_csv
from tomoformer.checkpoint import load_checkpoint
from tomoformer.cli import main as tomoformer
from tomoformer.data.datamodule import SignalMapDataset
from tomoformer.data.format import open_dataset
from tomoformer.evaluation.calibration import calibration_metrics, fit_temperature, with_temperature
from tomoformer.evaluation.figures import risk_coverage_figure, save_figure
from tomoformer.evaluation.metrics import evaluate_predictions
from tomoformer.io import write_text_atomic
from tomoformer.pretrained import card
from tomoformer.tasks.inference import predict_probabilities
from tomoformer.tasks.uncertainty import binary_entropy, predict_with_uncertainty, risk_coverage, uncertainty_auroc

METHODS = {  # name: (views, frame fraction)
    "single pass": (1, None),
    "D4 x4": (4, None),
    "D4 x8": (8, None),
    "D4 x8, 75% frames": (8, 0.75),
    "D4 x8, 50% frames": (8, 0.5),
}


def simulate(path: Path, n: int, size: int, frames: int, seed: int) -> Path:
    argv = ["simulate", "--out", str(path), "--n", str(n), "--size", str(size), "--frames", str(frames)]
    if tomoformer([*argv, "--seed", str(seed), "--resume", "--no-progress"]) != 0:
        raise SystemExit(f"uncertainty: could not simulate {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val-data", help="labelled validation store (temperature fit); default: simulated")
    parser.add_argument("--data", help="labelled test store; default: simulated")
    parser.add_argument("--n", type=int, default=32, help="tiles per simulated store")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--pretrained", default="realcity")
    parser.add_argument("--checkpoint")
    parser.add_argument("--out", default="benchmarks/results/uncertainty")
    args = parser.parse_args()
    torch.manual_seed(0)
    tiles = Path("runs/uncertainty")
    shape = (args.n, args.size, args.frames)
    val_path = args.val_data or simulate(tiles / f"val_{args.n}x{args.size}_t{args.frames}.zarr", *shape, seed=5001)
    test_path = args.data or simulate(tiles / f"test_{args.n}x{args.size}_t{args.frames}.zarr", *shape, seed=5002)
    loaded = load_checkpoint(args.checkpoint or card(args.pretrained).weights)
    raw = loaded.model.float().eval()
    with open_dataset(val_path, require_buildings=True) as source:
        val = SignalMapDataset(source)
        logits = predict_probabilities(raw, val, logits=True)
        temperature = fit_temperature(logits, source.read("buildings", slice(None)))
    model = with_temperature(raw, temperature)
    with open_dataset(test_path, require_buildings=True) as source:
        test = SignalMapDataset(source)
        truth = source.read("buildings", slice(None))
        p_raw = predict_probabilities(raw, test)
        p_cal = predict_probabilities(model, test)
        calibration = []
        for name, p in (("uncalibrated", p_raw), (f"temperature {temperature:.3f}", p_cal)):
            scores = calibration_metrics(p, truth)
            iou = evaluate_predictions(p, truth)["iou"]
            calibration.append({"model": name, **{k: scores[k] for k in ("ece", "brier", "nll")}, "iou": iou})
        rows, curves = [], {}
        for name, (views, fraction) in METHODS.items():
            start = time.perf_counter()
            if views == 1:
                mean, u = p_cal, binary_entropy(p_cal)
            else:
                mean, u = predict_with_uncertainty(model, test, views=views, frame_fraction=fraction)
            seconds = time.perf_counter() - start
            curves[name] = risk_coverage(p_cal, truth, u)
            rows.append(
                {
                    "method": name,
                    "auroc_wrong_cells": uncertainty_auroc(p_cal, truth, u),
                    "iou_of_mean": evaluate_predictions(mean, truth)["iou"],
                    "ece_of_mean": calibration_metrics(mean, truth)["ece"],
                    "seconds": seconds,
                }
            )
    out = Path(args.out)
    write_csv(out / "calibration.csv", calibration)
    write_csv(out / "uncertainty.csv", rows)
    write_csv(out / "risk_coverage.csv", [{"method": m, **r} for m, c in curves.items() for r in c])
    save_figure(risk_coverage_figure(curves), out / "risk_coverage.png")
    lines = [
        f"validation {val_path}, test {test_path}",
        "",
        "| model | ece | brier | nll | iou |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['ece']:.4f} | {r['brier']:.4f} | {r['nll']:.4f} | {r['iou']:.4f} |" for r in calibration
    ]
    lines += ["", "| uncertainty | AUROC (wrong cells) | IoU at 50% coverage | IoU at 80% | IoU at 100% | seconds |"]
    lines += ["|---|---|---|---|---|---|"]
    for r in rows:
        c = {round(x["coverage"], 2): x["iou"] for x in curves[r["method"]]}
        lines.append(
            f"| {r['method']} | {r['auroc_wrong_cells']:.4f} | {c[0.5]:.3f} | {c[0.8]:.3f} | {c[1.0]:.3f} "
            f"| {r['seconds']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    write_text_atomic(out / "summary.md", text)
    print(text)


if __name__ == "__main__":
    main()
