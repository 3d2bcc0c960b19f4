"""Per-cell uncertainty of building maps by test-time augmentation, and how to score an uncertainty map.

The uncertainty of a cell is the binary entropy, in bits (0 = sure, 1 = a coin toss), of the building probability
averaged over views of the same input: the 8 symmetries of the square (D4; 4 on non-square maps), each mapped
back onto the original grid, optionally each with a random subset of the frames. A cell whose answer changes
with the viewpoint, or that every view finds near 0.5, is uncertain.

Scores (:func:`uncertainty_auroc`, :func:`risk_coverage`) say whether the uncertainty ranks the wrong cells first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from tomoformer.data.datamodule import SignalMapDataset, collate
from tomoformer.data.transforms import N_D4, SHAPE_KEEPING_D4, apply_d4
from tomoformer.evaluation.metrics import ArrayLike, BinaryCounts, as_bool, to_numpy

# Chosen by measurement (docs/uncertainty.md): 8 D4 views, each but the first on a random 75 % of the frames.
DEFAULT_VIEWS = N_D4
DEFAULT_FRAME_FRACTION = 0.75
COVERAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def binary_entropy(p: ArrayLike) -> np.ndarray:
    """Entropy in bits of a Bernoulli(p), elementwise: 0 at p = 0 or 1, 1 at p = 0.5 (NaN stays NaN)."""
    q = np.clip(to_numpy(p).astype(np.float64), 1e-12, 1 - 1e-12)
    return (-(q * np.log2(q) + (1 - q) * np.log2(1 - q))).astype(np.float32)


def _undo_d4(x: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`apply_d4` element ``k`` on maps ``[..., H', W']``."""
    flip, turns = k >= 4, k % 4
    if turns:
        x = torch.rot90(x, -turns, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def view_probabilities(
    model: nn.Module,
    signals: torch.Tensor,
    tx_pos: torch.Tensor | None,
    views: int = N_D4,
    frame_fraction: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Building probabilities of every view, on the original grid: ``[V, B, H, W]`` float32.

    signals ``[B, T, H, W]`` dB; tx_pos ``[B, T, 3]`` (model convention) or None. View ``v`` is D4 element ``v``
    (of the shape-keeping four when H != W); with ``frame_fraction`` each view after the first also keeps a random
    ``ceil(fraction * T)`` frames (drawn from ``generator``).
    """
    H, W = signals.shape[-2:]
    elements = list(range(N_D4)) if H == W else list(SHAPE_KEEPING_D4)
    out = []
    T = signals.shape[1]
    for v in range(views):
        k = elements[v % len(elements)]
        s, tx = signals, tx_pos
        if frame_fraction is not None and v > 0 and T > 1:
            n = max(1, int(np.ceil(frame_fraction * T)))
            keep = torch.randperm(T, generator=generator)[:n].sort().values.to(signals.device)
            s = s.index_select(1, keep)
            tx = tx.index_select(1, keep) if tx is not None else None
        s, _, tx = apply_d4(s, None, tx, k)
        logits = model(s, tx).float()
        out.append(_undo_d4(torch.sigmoid(logits), k))
    return torch.stack(out)


@torch.no_grad()
def predict_with_uncertainty(
    model: nn.Module,
    dataset: SignalMapDataset,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    views: int = N_D4,
    frame_fraction: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean building probability over the views and its uncertainty, both ``[N, H, W]`` float32.

    The uncertainty is the binary entropy of the mean, in bits (0..1). ``model`` should be the calibrated one
    (:meth:`tomoformer.checkpoint.LoadedModel.calibrated`).
    """
    from tomoformer.tasks.guards import check_finite_probabilities
    from tomoformer.validation import resolve_device

    device = resolve_device(device) if not isinstance(device, torch.device) else device
    model = model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    _, _, h, w = dataset.source.shape
    mean = np.empty((len(dataset), h, w), dtype=np.float32)
    generator = torch.Generator().manual_seed(seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    position = 0
    for batch in loader:
        signals = batch["signals"].to(device)
        tx_pos = batch["tx_pos"].to(device) if "tx_pos" in batch else None
        with autocast:
            probs = view_probabilities(model, signals, tx_pos, views, frame_fraction, generator)
        p = probs.mean(0).cpu().numpy()
        check_finite_probabilities(p, dataset, position)
        mean[position : position + len(p)] = p
        position += len(p)
    return mean, binary_entropy(mean)


def uncertainty_auroc(
    probabilities: ArrayLike, truth: ArrayLike, uncertainty: ArrayLike, threshold: float = 0.5
) -> float:
    """AUROC of ``uncertainty`` as a detector of the wrong cells of the map ``probabilities > threshold``
    (0.5 = no better than chance, 1 = every wrong cell is more uncertain than every right one; NaN if all
    cells are right or all wrong)."""
    from sklearn.metrics import roc_auc_score

    wrong = ((to_numpy(probabilities) > threshold) != as_bool(truth)).reshape(-1)
    u = to_numpy(uncertainty).astype(np.float64).reshape(-1)
    if wrong.all() or not wrong.any():
        return float("nan")
    return float(roc_auc_score(wrong, u))


def risk_coverage(
    probabilities: ArrayLike,
    truth: ArrayLike,
    uncertainty: ArrayLike,
    coverages: Sequence[float] = COVERAGES,
    threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Scores of the map on the most certain ``coverage`` fraction of cells (all maps pooled; ties broken by
    cell order): one row per coverage with ``coverage``, ``iou``, ``accuracy`` and ``n_cells``."""
    pred = (to_numpy(probabilities) > threshold).reshape(-1)
    t = as_bool(truth).reshape(-1)
    order = np.argsort(to_numpy(uncertainty).reshape(-1), kind="stable")
    rows = []
    for c in coverages:
        n = max(1, round(float(c) * order.size))
        keep = order[:n]
        scores = BinaryCounts.from_masks(pred[keep], t[keep]).metrics()
        rows.append({"coverage": float(c), "iou": scores["iou"], "accuracy": scores["accuracy"], "n_cells": n})
    return rows
