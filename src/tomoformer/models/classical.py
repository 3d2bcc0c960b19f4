"""Classical baselines fitted on data instead of trained by gradients: ``threshold`` and ``rti``.

Both return logits [B, H, W] (a clipped, scaled margin to the fitted decision boundary, in [-10, 10]) and keep
what ``fit`` learned in buffers, so ``state_dict()`` round-trips a fitted model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import lsqr
from torch import Tensor, nn

from tomoformer.errors import DataError
from tomoformer.models.features import DB_SCALE, PIXEL_STATISTICS, frame_features, pixel_statistics
from tomoformer.models.registry import register_model

__all__ = ["RTIModel", "ThresholdModel", "rti", "threshold"]

LOGIT_CLIP = 10.0


def _iou_counts(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """pred [K, P] bool, target [P] bool -> intersection [K], union [K] counts."""
    return (pred & target).sum(-1).double(), (pred | target).sum(-1).double()


def _iou(inter: Tensor, union: Tensor) -> Tensor:
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


class ThresholdModel(nn.Module):
    """Building where a pixel was never received, or where its best signal over the frames is low.

    "Best signal" is the per-pixel maximum over frames of the normalised dB (20 dB units, relative to each
    frame's median) or, when transmitter positions are known, of the signal relative to free space (the
    excess over the free-space prediction): a cell that some transmitter reaches in line of sight is outdoors,
    whatever its distance. ``fit`` scans ``num_candidates`` thresholds on each available feature and keeps the
    rule with the best IoU over all fit batches: "never received or feature < threshold" (mode 1) or "never
    received" alone (mode 0).
    """

    requires_fit = True
    FEATURES = ("db_max", "ex_max")

    def __init__(self, num_candidates: int = 121, low: float = -3.0, high: float = 3.0, sharpness: float = 20.0):
        super().__init__()
        self.sharpness = sharpness
        self.register_buffer("candidates", torch.linspace(low, high, num_candidates))
        self.register_buffer("threshold", torch.tensor(float(low)))
        self.register_buffer("mode", torch.tensor(0, dtype=torch.long))
        self.register_buffer("feature", torch.tensor(0, dtype=torch.long))  # index into FEATURES
        self.register_buffer("fit_iou", torch.tensor(float("nan")))

    @staticmethod
    def _inputs(signals: Tensor, tx_pos: Tensor | None) -> tuple[Tensor, Tensor]:
        """-> features [F, B, H, W] (db_max, and ex_max when tx_pos is given), never received [B, H, W]."""
        stats = pixel_statistics(signals, tx_pos)
        names = ThresholdModel.FEATURES if tx_pos is not None else ThresholdModel.FEATURES[:1]
        features = torch.stack([stats[:, PIXEL_STATISTICS.index(n)] for n in names])
        return features, stats[:, PIXEL_STATISTICS.index("valid_frac")] == 0

    @torch.no_grad()
    def fit(self, batches: Iterable[dict[str, Tensor]]) -> None:
        """Pick the rule, feature and threshold with the best IoU over ``batches`` (signals, tx_pos, buildings)."""
        K = len(self.candidates)
        inter = union = None
        for batch in batches:
            tx = batch.get("tx_pos")
            features, never = self._inputs(batch["signals"].to(self.candidates.device), tx)
            target = batch["buildings"].to(never.device).flatten() > 0.5
            never = never.flatten()
            preds = [never[None]]
            for feature in features.flatten(1):
                preds.append(never[None] | (feature[None] < self.candidates[:, None]))
            i, u = _iou_counts(torch.cat(preds), target)
            if inter is not None and len(i) != len(inter):
                raise DataError("threshold.fit: some fit batches have tx_pos and others do not")
            inter = i.cpu() if inter is None else inter + i.cpu()
            union = u.cpu() if union is None else union + u.cpu()
        if inter is None:
            raise DataError("threshold.fit got no batches")
        iou = _iou(inter, union)
        best = int(torch.argmax(iou))  # ties favour index 0, the simpler never-received rule
        self.mode.fill_(0 if best == 0 else 1)
        self.feature.fill_(max(best - 1, 0) // K)
        self.threshold.fill_(float(self.candidates[max(best - 1, 0) % K]))
        self.fit_iou.fill_(float(iou[best]))

    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        """signals [B, T, H, W] dB, tx_pos [B, T, 3] | None -> logits [B, H, W]."""
        features, never = self._inputs(signals, tx_pos)
        if int(self.feature) >= len(features):
            raise DataError("this threshold model was fitted with transmitter positions (tx_pos); the data has none")
        margin = ((self.threshold - features[int(self.feature)]) * self.sharpness).clamp(-LOGIT_CLIP, LOGIT_CLIP)
        margin = torch.where(self.mode == 1, margin, torch.full_like(margin, -LOGIT_CLIP))
        return torch.where(never, torch.full_like(margin, LOGIT_CLIP), margin).float()


class RTIModel(nn.Module):
    """Radio tomographic imaging: attenuation image from the excess loss of every tx -> rx link, thresholded.

    For each frame with a known transmitter, every measured cell is a link. Its attenuation y (dB lost beyond
    free space, each frame's median removed) is modelled as y = W x, with x the per-cell attenuation image and
    W the ellipse model: w_ij = 1/sqrt(d_link) when cell j lies inside the ellipse with foci tx and rx whose
    path excess is ``ellipse_excess`` cells, else 0. x solves the Tikhonov problem
    min |W x - y|^2 + alpha (|Dx x|^2 + |Dy x|^2 + eps |x|^2) (finite-difference smoothness) with LSQR.
    ``fit`` picks alpha from ``alpha_grid`` and a threshold on x with the best IoU on the fit data.

    Args:
        ellipse_excess: lambda, the ellipse's excess path length in cells.
        alpha_grid: regularisation strengths tried by ``fit`` (the first one is used before fitting).
        max_links: links kept per sample (random subset, seeded), bounding the cost.
        iter_lim: LSQR iterations.
        max_fit_samples: samples used by ``fit``.
    """

    requires_fit = True

    def __init__(
        self,
        ellipse_excess: float = 0.5,
        alpha_grid: tuple[float, ...] = (0.3, 3.0, 30.0),
        max_links: int = 4000,
        iter_lim: int = 200,
        eps: float = 1e-2,
        max_fit_samples: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.ellipse_excess = ellipse_excess
        self.alpha_grid = tuple(float(a) for a in alpha_grid)
        self.max_links, self.iter_lim, self.eps = max_links, iter_lim, eps
        self.max_fit_samples, self.seed = max_fit_samples, seed
        self.register_buffer("alpha", torch.tensor(self.alpha_grid[0]))
        self.register_buffer("threshold", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("fit_iou", torch.tensor(float("nan")))

    # ----- the linear model ---------------------------------------------------------------------------------
    def _links(self, signals: Tensor, tx_pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One sample: signals [T, H, W], tx_pos [T, 3] -> tx [L, 2], rx [L, 2] (row, col cells), y [L] dB."""
        feats, _ = frame_features(signals[None], tx_pos[None])
        excess, ok = feats[0, :, 3], (feats[0, :, 1] > 0) & (feats[0, :, 4] == 0)
        t, r, c = torch.nonzero(ok, as_tuple=True)
        if len(t) > self.max_links:
            gen = torch.Generator().manual_seed(self.seed)
            keep = torch.randperm(len(t), generator=gen)[: self.max_links].sort().values.to(t.device)
            t, r, c = t[keep], r[keep], c[keep]
        tx = tx_pos[t, :2].float()
        rx = torch.stack([r, c], dim=-1).float()
        return tx, rx, -excess[t, r, c] * DB_SCALE  # attenuation, dB

    def _weights(self, tx: Tensor, rx: Tensor, H: int, W: int, chunk: int = 512) -> sp.csr_matrix:
        """Ellipse weight matrix [L, H*W] for links tx -> rx."""
        rows_g, cols_g = torch.meshgrid(
            torch.arange(H, dtype=torch.float32, device=tx.device),
            torch.arange(W, dtype=torch.float32, device=tx.device),
            indexing="ij",
        )
        cells = torch.stack([rows_g.flatten(), cols_g.flatten()], dim=-1)  # [HW, 2]
        if len(tx) == 0:
            return sp.csr_matrix((0, H * W))
        ri, ci, vals = [], [], []
        for start in range(0, len(tx), chunk):
            a, b = tx[start : start + chunk], rx[start : start + chunk]
            d_link = (a - b).norm(dim=-1)
            path = torch.cdist(a, cells) + torch.cdist(b, cells)
            inside = path < (d_link + self.ellipse_excess)[:, None]
            li, cj = torch.nonzero(inside, as_tuple=True)
            ri.append(li + start)
            ci.append(cj)
            vals.append(d_link.clamp_min(1.0).rsqrt()[li])
        ri_np, ci_np = torch.cat(ri).cpu().numpy(), torch.cat(ci).cpu().numpy()
        vals_np = torch.cat(vals).cpu().numpy().astype(np.float64)
        return sp.csr_matrix((vals_np, (ri_np, ci_np)), shape=(len(tx), H * W))

    def _regulariser(self, H: int, W: int) -> sp.csr_matrix:
        def diff(n: int) -> sp.spmatrix:
            return sp.diags([-np.ones(n - 1), np.ones(n - 1)], [0, 1], shape=(max(n - 1, 0), n))

        dy = sp.kron(diff(H), sp.identity(W))
        dx = sp.kron(sp.identity(H), diff(W))
        return sp.vstack([dy, dx, np.sqrt(self.eps) * sp.identity(H * W)]).tocsr()

    def _solve(self, Wm: sp.csr_matrix, y: np.ndarray, alpha: float, H: int, W: int) -> np.ndarray:
        if Wm.shape[0] == 0:
            return np.zeros(H * W)
        R = self._regulariser(H, W)
        A = sp.vstack([Wm, np.sqrt(alpha) * R]).tocsr()
        rhs = np.concatenate([y, np.zeros(R.shape[0])])
        return lsqr(A, rhs, iter_lim=self.iter_lim)[0]

    def _systems(self, signals: Tensor, tx_pos: Tensor | None) -> list[tuple[sp.csr_matrix, np.ndarray]]:
        if tx_pos is None:
            raise DataError("rti needs transmitter positions (tx_pos), but the data has none")
        H, W = signals.shape[-2:]
        out = []
        for b in range(signals.shape[0]):
            tx, rx, y = self._links(signals[b], tx_pos[b])
            out.append((self._weights(tx, rx, H, W), y.double().cpu().numpy()))
        return out

    def image(self, signals: Tensor, tx_pos: Tensor | None, alpha: float | None = None) -> Tensor:
        """signals [B, T, H, W] dB, tx_pos [B, T, 3] cells -> attenuation image x [B, H, W]."""
        H, W = signals.shape[-2:]
        alpha = float(self.alpha) if alpha is None else alpha
        xs = [self._solve(Wm, y, alpha, H, W) for Wm, y in self._systems(signals, tx_pos)]
        return torch.from_numpy(np.stack(xs)).float().reshape(-1, H, W).to(signals.device)

    # ----- fit and predict ----------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, batches: Iterable[dict[str, Tensor]]) -> None:
        """Choose alpha (from ``alpha_grid``) and the threshold on x with the best IoU on the fit batches."""
        systems, targets, n = [], [], 0
        for batch in batches:
            k = min(self.max_fit_samples - n, batch["signals"].shape[0])
            tx = batch.get("tx_pos")
            shape = tuple(batch["signals"].shape[-2:])
            systems += [(*s, shape) for s in self._systems(batch["signals"][:k], None if tx is None else tx[:k])]
            targets.append(batch["buildings"][:k].flatten().cpu() > 0.5)
            n += k
            if n >= self.max_fit_samples:
                break
        if n == 0:
            raise DataError("rti.fit got no batches")
        target = torch.cat(targets)
        best = (-1.0, self.alpha_grid[0], 0.0, 1.0)
        for alpha in self.alpha_grid:
            x = torch.from_numpy(np.concatenate([self._solve(Wm, y, alpha, *hw) for Wm, y, hw in systems]))
            candidates = torch.quantile(x.float(), torch.linspace(0.01, 0.99, 99, dtype=torch.float32))
            iou = _iou(*_iou_counts(x[None] > candidates.double()[:, None], target))
            k = int(torch.argmax(iou))
            if float(iou[k]) > best[0]:
                spread = float(x.std()) if x.numel() > 1 else 1.0
                best = (float(iou[k]), alpha, float(candidates[k]), 4.0 / max(spread, 1e-12))
        self.fit_iou.fill_(best[0])
        self.alpha.fill_(best[1])
        self.threshold.fill_(best[2])
        self.scale.fill_(best[3])

    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        """signals [B, T, H, W] dB, tx_pos [B, T, 3] cells (required) -> logits [B, H, W]."""
        x = self.image(signals, tx_pos)
        return ((x - self.threshold) * self.scale).clamp(-LOGIT_CLIP, LOGIT_CLIP).float()


@register_model
def threshold(**kwargs: Any) -> ThresholdModel:
    """Never-received rule + best threshold on the per-pixel max of the normalised signal."""
    return ThresholdModel(**kwargs)


@register_model
def rti(**kwargs: Any) -> RTIModel:
    """Radio tomographic imaging (ellipse model, Tikhonov least squares) + fitted threshold."""
    return RTIModel(**kwargs)
