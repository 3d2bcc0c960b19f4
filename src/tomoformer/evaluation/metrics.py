"""Pixel metrics of the building class: counts that stream over batches, scores, per-group breakdowns.

Every score is a ratio of confusion counts summed over all pixels of all samples (micro average), so a
large area weighs more than a small one and the result does not depend on how samples were batched.

Zero denominators: a ratio whose denominator is zero had nothing it could get wrong, and scores 1.0.
So ``iou = f1 = 1`` when there is neither a building nor a predicted building; ``precision = 1`` when
nothing was predicted (no false alarm), ``recall = 1`` when there is no building to find. The combined
scores stay honest: predicting nothing on a map with buildings gives ``iou = f1 = 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray

METRIC_NAMES = ("iou", "f1", "precision", "recall", "accuracy")


def to_numpy(x: ArrayLike | Sequence[Any]) -> np.ndarray:
    """A numpy view/copy of a tensor (any device, any dtype) or array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _ratio(num: int, den: int) -> float:
    return float(num) / den if den > 0 else 1.0


@dataclass
class BinaryCounts:
    """Confusion counts of the building class; add them up over batches, then call :meth:`metrics`."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def from_masks(cls, pred: ArrayLike, truth: ArrayLike) -> BinaryCounts:
        """Counts of boolean masks ``pred``, ``truth`` of the same shape (e.g. ``[N, H, W]``)."""
        return cls().update(pred, truth)

    def update(self, pred: ArrayLike, truth: ArrayLike) -> BinaryCounts:
        """Add the counts of ``pred`` against ``truth`` (bool or 0/1, same shape) in place; returns self."""
        p, t = as_bool(pred), as_bool(truth)
        if p.shape != t.shape:
            raise ValueError(f"prediction shape {p.shape} does not match truth shape {t.shape}")
        tp = int(np.count_nonzero(p & t))
        n_pred, n_true = int(np.count_nonzero(p)), int(np.count_nonzero(t))
        self.tp += tp
        self.fp += n_pred - tp
        self.fn += n_true - tp
        self.tn += int(p.size) - n_pred - n_true + tp
        return self

    def __add__(self, other: BinaryCounts) -> BinaryCounts:
        if not isinstance(other, BinaryCounts):
            return NotImplemented
        return BinaryCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def total(self) -> int:
        """Number of pixels counted."""
        return self.tp + self.fp + self.fn + self.tn

    def metrics(self) -> dict[str, float]:
        """``iou``, ``f1``, ``precision``, ``recall``, ``accuracy`` (zero denominators score 1.0)."""
        tp, fp, fn = self.tp, self.fp, self.fn
        return {
            "iou": _ratio(tp, tp + fp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "accuracy": _ratio(tp + self.tn, self.total),
        }


def as_bool(x: ArrayLike) -> np.ndarray:
    a = to_numpy(x)
    # Truth maps come as uint8 0/1 or float 0./1. (possibly soft); a half-way cut reads them all.
    return a if a.dtype == np.bool_ else a > 0.5


def _per_sample_counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``[N, 4]`` int64 counts (tp, fp, fn, tn) per sample of ``[N, ...]`` boolean masks."""
    n = pred.shape[0]
    p, t = pred.reshape(n, -1), truth.reshape(n, -1)
    tp = np.count_nonzero(p & t, axis=1)
    n_pred, n_true = np.count_nonzero(p, axis=1), np.count_nonzero(t, axis=1)
    fp, fn = n_pred - tp, n_true - tp
    tn = p.shape[1] - tp - fp - fn
    return np.stack([tp, fp, fn, tn], axis=1).astype(np.int64)


class MetricAccumulator:
    """Streaming evaluation: :meth:`update` batch by batch, then :meth:`compute` the final dict.

    Holds only confusion counts (overall and per group) plus a running sum of per-sample IoU, so memory
    does not grow with the dataset.
    """

    def __init__(self, threshold: float = 0.5, group_names: Sequence[str] | None = None) -> None:
        self.threshold = float(threshold)
        self.group_names = list(group_names) if group_names is not None else None
        self.counts = BinaryCounts()
        self.group_counts: dict[int, BinaryCounts] = {}
        self.group_samples: dict[int, int] = {}
        self.n_samples = 0
        self.sample_iou_sum = 0.0
        self.has_groups = False

    def update(self, probabilities: ArrayLike, truth: ArrayLike, groups: ArrayLike | None = None) -> None:
        """Add a batch.

        probabilities: ``[N, H, W]`` in [0, 1] (NaN = no prediction); truth: ``[N, H, W]`` 0/1;
        groups: ``[N]`` int or None.
        """
        prob = to_numpy(probabilities).astype(np.float32, copy=False)
        t = as_bool(truth)
        if prob.ndim == 2 and t.ndim == 2:  # a single map
            prob, t = prob[None], t[None]
        if prob.ndim != 3 or prob.shape != t.shape:
            raise ValueError(f"probabilities and truth must share a shape [N, H, W]; got {prob.shape} and {t.shape}")
        pred = prob > self.threshold  # NaN compares False: no prediction is no building
        per_sample = _per_sample_counts(pred, t)
        self.counts += BinaryCounts(*(int(v) for v in per_sample.sum(axis=0)))
        tp, fp, fn = per_sample[:, 0], per_sample[:, 1], per_sample[:, 2]
        den = tp + fp + fn
        self.sample_iou_sum += float(np.where(den > 0, tp / np.maximum(den, 1), 1.0).sum())
        self.n_samples += prob.shape[0]
        if groups is None:
            if self.has_groups:
                raise ValueError("groups were given for earlier batches but not for this one")
            return
        if self.n_samples > prob.shape[0] and not self.has_groups:
            raise ValueError("groups were not given for earlier batches")
        self.has_groups = True
        g = to_numpy(groups).reshape(-1).astype(np.int64)
        if g.shape[0] != prob.shape[0]:
            raise ValueError(f"groups has {g.shape[0]} entries for {prob.shape[0]} samples")
        if self.group_names is not None and g.size and (g.min() < 0 or g.max() >= len(self.group_names)):
            raise ValueError(f"group index out of range for {len(self.group_names)} group names")
        for gid in np.unique(g):
            sel = g == gid
            add = BinaryCounts(*(int(v) for v in per_sample[sel].sum(axis=0)))
            key = int(gid)
            self.group_counts[key] = self.group_counts.get(key, BinaryCounts()) + add
            self.group_samples[key] = self.group_samples.get(key, 0) + int(sel.sum())

    def compute(self) -> dict[str, Any]:
        """The metrics dict (see :func:`evaluate_predictions`)."""
        if self.n_samples == 0:
            raise ValueError("no samples to evaluate")
        out: dict[str, Any] = self.counts.metrics()
        out["iou_per_sample"] = self.sample_iou_sum / self.n_samples
        out["n_samples"] = self.n_samples
        out["threshold"] = self.threshold
        out["counts"] = asdict(self.counts)
        if self.has_groups:
            out["per_group"] = {
                self._group_name(gid): {
                    **self.group_counts[gid].metrics(),
                    "n_samples": self.group_samples[gid],
                    "counts": asdict(self.group_counts[gid]),
                }
                for gid in sorted(self.group_counts)
            }
        return out

    def _group_name(self, gid: int) -> str:
        return self.group_names[gid] if self.group_names is not None else str(gid)


def evaluate_predictions(
    probabilities: ArrayLike,
    truth: ArrayLike,
    groups: ArrayLike | None = None,
    threshold: float = 0.5,
    group_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score building probabilities against the truth.

    Args:
        probabilities: ``[N, H, W]`` float in [0, 1]; a pixel is predicted building when ``p > threshold``.
        truth: ``[N, H, W]`` uint8/bool/float, 1 = building.
        groups: ``[N]`` int group index per sample (e.g. city style), or None.
        threshold: decision threshold on the probabilities.
        group_names: names of group indices 0..G-1; without it groups are named by their index.

    Returns:
        ``{"iou", "f1", "precision", "recall", "accuracy"}`` (pixel micro averages), ``"iou_per_sample"``
        (mean of per-sample IoU), ``"n_samples"``, ``"threshold"``, ``"counts"`` (tp/fp/fn/tn) and, when
        groups are given, ``"per_group": {name: {same scores, "n_samples", "counts"}}`` for groups present.
    """
    acc = MetricAccumulator(threshold=threshold, group_names=group_names)
    acc.update(probabilities, truth, groups)
    return acc.compute()


def best_threshold(probabilities: ArrayLike, truth: ArrayLike, thresholds: ArrayLike | None = None) -> float:
    """The threshold (on a grid, default 0.01 … 0.99) maximising the pixel IoU of ``p > threshold``.

    Exact on the grid in O(n log n): probabilities are sorted once per class, and the number of pixels
    above each threshold is read off with a binary search. Ties go to the threshold nearest 0.5.
    """
    prob = to_numpy(probabilities).astype(np.float64).reshape(-1)
    t = as_bool(truth).reshape(-1)
    if prob.shape != t.shape:
        raise ValueError(f"probabilities ({prob.size} values) and truth ({t.size} values) differ in size")
    grid = np.round(np.arange(1, 100) / 100, 2) if thresholds is None else to_numpy(thresholds).astype(float)
    grid = np.asarray(grid, dtype=np.float64).reshape(-1)
    if grid.size == 0:
        raise ValueError("empty threshold grid")
    prob = np.where(np.isnan(prob), -np.inf, prob)  # NaN is never predicted as building
    pos, neg = np.sort(prob[t]), np.sort(prob[~t])
    tp = pos.size - np.searchsorted(pos, grid, side="right")
    fp = neg.size - np.searchsorted(neg, grid, side="right")
    fn = pos.size - tp
    den = tp + fp + fn
    iou = np.where(den > 0, tp / np.maximum(den, 1), 1.0)
    best = np.flatnonzero(iou >= iou.max() - 1e-12)
    return float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])
