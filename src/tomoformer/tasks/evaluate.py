"""Evaluate one or several models on a labelled dataset: metrics.json and a side-by-side report.html."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from tomoformer.data.datamodule import SignalMapDataset
from tomoformer.data.format import open_dataset
from tomoformer.errors import ConfigError
from tomoformer.models.protocol import requires_fit
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
    uncertainty: bool = False,
) -> dict[str, dict[str, Any]]:
    """Metrics of every model on ``data`` (overall and per group); writes ``out/metrics.json``, ``out/report.html``.

    Besides the pixel scores, every model gets its calibration scores ``ece`` (15 bins), ``brier`` and ``nll``
    and the ``reliability`` bins drawn as one reliability diagram per model in the report. With ``uncertainty``,
    also the per-cell uncertainty of :mod:`tomoformer.tasks.uncertainty`: ``uncertainty_auroc`` (how well it ranks
    the wrong cells first) and ``risk_coverage`` (IoU and accuracy on the most certain x % of cells), drawn too.
    ``metrics.json`` holds the metrics directly when one model is evaluated, else one entry per model.
    """
    from tomoformer.evaluation.calibration import calibration_metrics
    from tomoformer.evaluation.figures import comparison_figure, reliability_figure
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
            results[name].update(calibration_metrics(probabilities[name], truth))
            if uncertainty:
                results[name].update(
                    _uncertainty_scores(model, dataset, probabilities[name], truth, batch_size, device)
                )
        picks = np.linspace(0, len(dataset) - 1, num=min(n_figures, len(dataset))).round().astype(int)
        figures = [
            (
                "reliability: fraction of buildings against the predicted probability (15 bins; dashed = calibrated)",
                reliability_figure({name: r["reliability"] for name, r in results.items()}),
            )
        ]
        if uncertainty:
            from tomoformer.evaluation.figures import risk_coverage_figure

            curves = {name: r["risk_coverage"] for name, r in results.items()}
            figures.append(("risk-coverage: scores on the most certain x % of cells", risk_coverage_figure(curves)))
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


def _uncertainty_scores(
    model: nn.Module,
    dataset: SignalMapDataset,
    probabilities: np.ndarray,
    truth: np.ndarray,
    batch_size: int,
    device: str | None,
) -> dict[str, Any]:
    from tomoformer.tasks.uncertainty import (
        DEFAULT_FRAME_FRACTION,
        predict_with_uncertainty,
        risk_coverage,
        uncertainty_auroc,
    )

    _, u = predict_with_uncertainty(model, dataset, batch_size, device, frame_fraction=DEFAULT_FRAME_FRACTION)
    return {
        "uncertainty_auroc": uncertainty_auroc(probabilities, truth, u),
        "risk_coverage": risk_coverage(probabilities, truth, u),
    }


def evaluate_checkpoints(
    checkpoints: list[str],
    names: list[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    fit_data: str | None = None,
    batch_size: int = 8,
    device: str | None = None,
    n_figures: int = 4,
    uncertainty: bool = False,
) -> dict[str, dict[str, Any]]:
    """``tomoformer evaluate``: the models of :func:`load_models` through :func:`evaluate_models`."""
    models = load_models(checkpoints, names, fit_data)
    return evaluate_models(
        models, data, out, batch_size=batch_size, device=device, n_figures=n_figures, uncertainty=uncertainty
    )


def load_models(checkpoints: list[str], names: list[str], fit_data: str | None) -> dict[str, nn.Module]:
    """Models by display name: checkpoints (their fitted temperature applied; named after their model, plus their
    run folder and file when several share a model) and the registry models ``names`` (fitted on the first
    batches of ``fit_data`` when they need fitting and it is given)."""
    # imported here, not at the top: tests replace tomoformer.checkpoint.load_checkpoint
    from tomoformer.checkpoint import load_checkpoint
    from tomoformer.models.registry import create_model

    loaded = [load_checkpoint(path) for path in checkpoints]
    counts = Counter(item.name for item in loaded)
    models: dict[str, nn.Module] = {}
    for path, item in zip(checkpoints, loaded, strict=True):
        key = item.name if counts[item.name] == 1 else f"{item.name} ({_run_label(path)})"
        while key in models:
            key += "'"
        calibrated = getattr(item, "calibrated", None)
        models[key] = calibrated() if callable(calibrated) else item.model
    for name in names:
        model = create_model(name)
        if requires_fit(model):
            if fit_data:
                model.fit(_fit_batches(fit_data))
            else:
                print(f"note: {name} uses its default parameters (give --fit-data to fit it)")
        models[name] = model.eval()
    if not models:
        raise ConfigError("give at least one --checkpoint or --model")
    return models


def _run_label(path: str) -> str:
    """``run/best`` for ``run/checkpoints/best.ckpt``: what tells checkpoints of one model apart."""
    file = Path(path)
    run = file.parent.parent if file.parent.name == "checkpoints" else file.parent
    return f"{run.name}/{file.stem}"


def _fit_batches(path: str, batch_size: int = 8, limit: int = 64) -> list[dict]:
    """The first ``limit`` batches of labelled data at ``path``: what fitted models are fitted on."""
    from torch.utils.data import DataLoader

    from tomoformer.data.datamodule import collate

    source = open_dataset(path, require_buildings=True)
    loader = DataLoader(SignalMapDataset(source), batch_size=batch_size, collate_fn=collate)
    return [batch for _, batch in zip(range(limit), loader, strict=False)]


def print_table(results: dict[str, dict[str, Any]]) -> None:
    """The metrics of several models as a rich table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="building map metrics (held-out data)")
    columns = ("iou", "f1", "precision", "recall", "accuracy", "ece", "brier", "nll", "uncertainty_auroc")
    table.add_column("model")
    for column in columns:
        table.add_column("unc. auroc" if column == "uncertainty_auroc" else column, justify="right")
    for name, metrics in sorted(results.items(), key=lambda kv: -kv[1]["iou"]):
        table.add_row(name, *(f"{metrics[c]:.3f}" if c in metrics else "-" for c in columns))
    Console().print(table)
