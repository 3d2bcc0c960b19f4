"""Evaluate one or several models on a labelled dataset: metrics.json and a side-by-side report.html."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from tomoformer.data.datamodule import SignalMapDataset
from tomoformer.data.format import open_dataset
from tomoformer.tasks.inference import predict_probabilities


def evaluate_models(
    models: dict[str, nn.Module],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    batch_size: int = 8,
    device: str | None = None,
    n_figures: int = 4,
    title: str | None = None,
    notes: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics of every model on ``data`` (overall and per group); writes ``out/metrics.json``, ``out/report.html``.

    ``metrics.json`` holds the metrics directly when one model is evaluated, else one entry per model.
    """
    from tomoformer.evaluation.figures import comparison_figure
    from tomoformer.evaluation.metrics import evaluate_predictions
    from tomoformer.evaluation.report import write_metrics_json, write_report

    out = Path(out)
    with open_dataset(data, require_buildings=True) as source:
        dataset = SignalMapDataset(source)
        truth = dataset.cache["buildings"] if dataset.cache else source.read("buildings", slice(None))
        groups = (dataset.cache or {}).get("group")
        if groups is None and source.group is not None:
            groups = source.read("group", slice(None))
        group_names = source.attrs.get("group_names")
        results: dict[str, dict[str, Any]] = {}
        probabilities: dict[str, np.ndarray] = {}
        for name, model in models.items():
            probabilities[name] = predict_probabilities(
                model, dataset, batch_size=batch_size, device=device, progress=True
            )
            results[name] = evaluate_predictions(probabilities[name], truth, groups=groups, group_names=group_names)
        picks = np.linspace(0, len(dataset) - 1, num=min(n_figures, len(dataset))).round().astype(int)
        figures = []
        for i in sorted(set(picks.tolist())):
            raw = dataset.raw(i)
            figures.append(
                (
                    f"sample {int(dataset.indices[i])}",
                    comparison_figure(
                        signals=raw["signals"].astype(np.float32),
                        tx_pos=raw.get("tx_pos"),
                        buildings=raw["buildings"],
                        probabilities={name: p[i] for name, p in probabilities.items()},
                    ),
                )
            )
    write_metrics_json(out / "metrics.json", next(iter(results.values())) if len(results) == 1 else results)
    write_report(out / "report.html", title or f"TomoFormer evaluation on {data}", results, figures, notes)
    return results


def print_table(results: dict[str, dict[str, Any]]) -> None:
    """The metrics of several models as a rich table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="building map metrics (held-out data)")
    columns = ("iou", "f1", "precision", "recall", "accuracy")
    table.add_column("model")
    for column in columns:
        table.add_column(column, justify="right")
    for name, metrics in sorted(results.items(), key=lambda kv: -kv[1]["iou"]):
        table.add_row(name, *(f"{metrics[c]:.3f}" for c in columns))
    Console().print(table)
