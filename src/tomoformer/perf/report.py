"""Benchmark output: a plain-text table (ratios to ``unet``) and CSV / JSON files with every figure."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from tomoformer.errors import ConfigError
from tomoformer.io import write_text_atomic
from tomoformer.perf.throughput import BenchResult

# (header, row key, format) of the printed table; the files hold every field.
COLUMNS = (
    ("model", "model", "{}"),
    ("T", "frames", "{}"),
    ("HxW", "size", "{0}x{0}"),
    ("B", "batch_size", "{}"),
    ("params", "params", "{:,}"),
    ("train/s", "train_samples_per_s", "{:.1f}"),
    ("infer/s", "infer_samples_per_s", "{:.1f}"),
    ("train TF/s", "train_tflops", "{:.3f}"),
    ("infer TF/s", "infer_tflops", "{:.3f}"),
    ("blocks TF/s", "blocks_tflops", "{:.3f}"),
    ("GF/sample", "train_gflop_per_sample", "{:.2f}"),
    ("train MiB", "train_peak_mib", "{:.0f}"),
    ("infer MiB", "infer_peak_mib", "{:.0f}"),
    ("blocks/peak", "blocks_peak_fraction", "{:.1%}"),
    ("syncs", "syncs_per_step", "{}"),
    ("train x unet", "train_vs_unet", "{:.2f}"),
    ("infer x unet", "infer_vs_unet", "{:.2f}"),
    ("data/s", "data_samples_per_s", "{:.1f}"),
    ("data wait", "host_wait_fraction", "{:.1%}"),
    ("stall", "stall_fraction", "{:.1%}"),
)


def environment(device: torch.device) -> dict[str, Any]:
    """Where the figures were measured (goes into the JSON file and the table header)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def format_table(results: list[BenchResult]) -> str:
    """Fixed-width table; columns no row has a value for are left out; '-' = not measured, errors spelled out."""
    rows = [r.row() for r in results]
    columns = [c for c in COLUMNS if any(row.get(c[1]) is not None for row in rows)]
    cells = [[h for h, _, _ in columns]]
    for row in rows:
        line = []
        for _, key, fmt in columns:
            value = row.get(key)
            line.append("-" if value is None else fmt.format(value))
        if row.get("error"):
            line[-1] = f"{line[-1]}  ({row['error']})"
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        for line in cells
    ]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def write_results(path: str | Path, results: list[BenchResult], meta: dict[str, Any]) -> Path:
    """``.csv`` (one row per result) or ``.json`` (``{"environment": meta, "results": [...]}``), atomically."""
    path = Path(path)
    rows = [r.row() for r in results]
    if path.suffix == ".json":
        text = json.dumps({"environment": meta, "results": rows}, indent=2)
    elif path.suffix == ".csv":
        buffer = io.StringIO()
        fields = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    else:
        raise ConfigError(f"--out {path}: use a .csv or .json file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path
