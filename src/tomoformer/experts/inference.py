"""A trained experts model on a dataset: ``tomoformer experts evaluate`` (IoU overall and per cluster) and
``tomoformer experts predict`` (probabilities, maps and the cluster each sample was routed to)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.checkpoint import load_checkpoint
from tomoformer.data.datamodule import SignalMapDataset
from tomoformer.data.format import open_dataset, write_dataset
from tomoformer.experts.fit import evaluate_into
from tomoformer.experts.task import predict_with_clusters
from tomoformer.validation import resolve_device


def evaluate_experts(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    batch_size: int = 8,
    device: str | None = None,
) -> dict[str, Any]:
    """Scores of the experts ``checkpoint`` on labelled ``data`` (overall and ``per_cluster``), also written to
    ``out/metrics.csv`` and ``out/metrics.json``."""
    loaded = load_checkpoint(checkpoint, expect_model="experts")
    with open_dataset(data, require_buildings=True) as source:
        return evaluate_into(loaded.model, SignalMapDataset(source), Path(out), batch_size, resolve_device(device))


def predict_experts(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    threshold: float = 0.5,
    batch_size: int = 8,
    device: str | None = None,
) -> np.ndarray:
    """Writes probabilities float32 [N, H, W], maps uint8 [N, H, W] (> ``threshold``) and ``group`` int16 [N] (the
    cluster each sample was routed to) of every sample of ``data`` to ``out``; returns the clusters int [N]."""
    loaded = load_checkpoint(checkpoint, expect_model="experts")
    with open_dataset(data) as source:
        probabilities, clusters, _ = predict_with_clusters(
            loaded.model, SignalMapDataset(source), batch_size, resolve_device(device)
        )
    arrays = {
        "probabilities": probabilities,
        "buildings": (probabilities > threshold).astype(np.uint8),
        "group": clusters.astype(np.int16),  # the cluster each sample was routed to
    }
    write_dataset(out, arrays, {"source": "tomoformer experts predict", "input": str(data)})
    return clusters
