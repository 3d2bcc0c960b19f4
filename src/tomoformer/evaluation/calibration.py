"""Calibration of building probabilities: ECE, Brier score, NLL, reliability bins, and temperature scaling.

All scores treat every cell of every map as one binary prediction ``p`` of "building" against the truth ``y``:

- ``ece``: expected calibration error over ``n_bins`` equal-width bins of ``p`` on [0, 1]:
  ``sum_b (n_b / n) |mean(y in b) - mean(p in b)|`` (the positive-class reliability, as torchmetrics'
  ``BinaryCalibrationError`` with ``norm="l1"``). 0 = calibrated.
- ``brier``: mean squared error ``mean((p - y)^2)``; 0 = perfect, 0.25 = always 0.5.
- ``nll``: mean binary cross-entropy in nats, ``p`` clipped to ``[1e-7, 1 - 1e-7]``.

Cells whose probability is NaN (no prediction) are left out of every score.

Temperature scaling divides the logits by one scalar ``T > 0`` fitted by minimising the NLL on validation data;
it never moves a probability across 0.5, so maps at the default threshold do not change.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from tomoformer.evaluation.metrics import ArrayLike, as_bool, to_numpy

N_BINS = 15
CALIBRATION_NAMES = ("ece", "brier", "nll")
EPS = 1e-7
# Temperatures outside this range are refused as fits: they would flatten or sharpen every map to uselessness.
T_MIN, T_MAX = 0.05, 20.0


class CalibrationAccumulator:
    """Streaming calibration scores: :meth:`update` batch by batch, then :meth:`compute`.

    Holds per-bin counts, sums of ``p`` and sums of ``y`` plus running Brier and NLL sums, so memory does not
    grow with the dataset.
    """

    def __init__(self, n_bins: int = N_BINS) -> None:
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = int(n_bins)
        self.count = np.zeros(n_bins, dtype=np.int64)
        self.sum_p = np.zeros(n_bins, dtype=np.float64)
        self.sum_y = np.zeros(n_bins, dtype=np.float64)
        self.brier_sum = 0.0
        self.nll_sum = 0.0
        self.n = 0

    def update(self, probabilities: ArrayLike, truth: ArrayLike) -> None:
        """Add probabilities ``[...]`` in [0, 1] (NaN = no prediction) against truth 0/1 of the same shape."""
        p = to_numpy(probabilities).astype(np.float64).reshape(-1)
        y = as_bool(truth).reshape(-1)
        if p.shape != y.shape:
            raise ValueError(f"probabilities ({p.size} values) and truth ({y.size} values) differ in size")
        ok = np.isfinite(p)
        p, y = np.clip(p[ok], 0.0, 1.0), y[ok].astype(np.float64)
        # Bins (lo, hi] as torchmetrics draws them, p = 0 in the first bin.
        index = np.clip(np.ceil(p * self.n_bins).astype(np.int64) - 1, 0, self.n_bins - 1)
        self.count += np.bincount(index, minlength=self.n_bins)
        self.sum_p += np.bincount(index, weights=p, minlength=self.n_bins)
        self.sum_y += np.bincount(index, weights=y, minlength=self.n_bins)
        self.brier_sum += float(np.sum((p - y) ** 2))
        q = np.clip(p, EPS, 1 - EPS)
        self.nll_sum += float(-np.sum(y * np.log(q) + (1 - y) * np.log1p(-q)))
        self.n += int(p.size)

    def compute(self) -> dict[str, Any]:
        """``ece``, ``brier``, ``nll`` and ``reliability`` (per bin: ``count``, ``confidence`` = mean p,
        ``frequency`` = fraction of buildings; NaN for empty bins); NaN scores when nothing was counted."""
        n = max(self.n, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = self.sum_p / self.count
            frequency = self.sum_y / self.count
        gaps = np.where(self.count > 0, np.abs(self.sum_y - self.sum_p), 0.0)
        empty = self.n == 0
        return {
            "ece": math.nan if empty else float(gaps.sum() / n),
            "brier": math.nan if empty else self.brier_sum / n,
            "nll": math.nan if empty else self.nll_sum / n,
            "reliability": {
                "count": self.count.tolist(),
                "confidence": confidence.tolist(),
                "frequency": frequency.tolist(),
            },
        }


def calibration_metrics(probabilities: ArrayLike, truth: ArrayLike, n_bins: int = N_BINS) -> dict[str, Any]:
    """ECE (``n_bins`` bins), Brier score and NLL of ``probabilities`` ``[N, H, W]`` against ``truth`` 0/1
    (see :class:`CalibrationAccumulator.compute` for the keys)."""
    acc = CalibrationAccumulator(n_bins)
    acc.update(probabilities, truth)
    return acc.compute()


def fit_temperature(
    logits: ArrayLike, truth: ArrayLike, max_cells: int = 2_000_000, seed: int = 0, max_iter: int = 100
) -> float:
    """The temperature ``T`` minimising the mean BCE of ``sigmoid(logits / T)`` against ``truth``.

    Args:
        logits: ``[...]`` float logits (NaN cells are skipped); truth: 0/1 of the same shape.
        max_cells: at most this many cells (drawn with ``seed``) enter the fit; a scalar needs no more.
        max_iter: LBFGS iterations (on ``log T``, so ``T`` stays positive).

    Returns:
        ``T`` in [0.05, 20]; 1.0 when there is nothing to fit on.
    """
    z = torch.as_tensor(to_numpy(logits), dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(as_bool(truth), dtype=torch.float64).reshape(-1)
    if z.shape != y.shape:
        raise ValueError(f"logits ({z.numel()} values) and truth ({y.numel()} values) differ in size")
    ok = torch.isfinite(z)
    z, y = z[ok], y[ok]
    if z.numel() == 0:
        return 1.0
    if z.numel() > max_cells:
        pick = torch.randperm(z.numel(), generator=torch.Generator().manual_seed(seed))[:max_cells]
        z, y = z[pick], y[pick]
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")
    loss_fn = nn.BCEWithLogitsLoss()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = loss_fn(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimiser.step(closure)
    t = float(log_t.exp().item())
    return float(min(max(t, T_MIN), T_MAX)) if math.isfinite(t) else 1.0


class TemperatureScaled(nn.Module):
    """A model whose logits are divided by a fixed temperature: ``forward(...) = model(...) / T``.

    Same inputs and output shape as the wrapped model (``signals [B, T, H, W]``, ``tx_pos [B, T, 3]`` or None,
    logits ``[B, H, W]``); the temperature is a buffer, so it moves with the model between devices.
    """

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)), persistent=False)

    def forward(self, signals: torch.Tensor, tx_pos: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(signals, tx_pos) / self.temperature.to(torch.float32)


def with_temperature(model: nn.Module, temperature: float) -> nn.Module:
    """``model`` itself when ``temperature`` is 1, else :class:`TemperatureScaled` around it."""
    return model if float(temperature) == 1.0 else TemperatureScaled(model, temperature)


__all__ = [
    "CALIBRATION_NAMES",
    "N_BINS",
    "CalibrationAccumulator",
    "TemperatureScaled",
    "calibration_metrics",
    "fit_temperature",
    "with_temperature",
]
