"""Classical baselines fitted on data instead of trained by gradients: ``threshold`` and ``rti``.

Both return logits [B, H, W] (a clipped, scaled margin to the fitted decision boundary, in [-10, 10]) and keep
what ``fit`` learned (and every value it chose) in buffers, so ``state_dict()`` and checkpoints round-trip a
fitted model; ``describe()`` says in one line what was chosen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import lsqr
from torch import Tensor, nn

from tomoformer.errors import ConfigError, DataError
from tomoformer.models.features import DB_SCALE, PIXEL_STATISTICS, frame_features, pixel_statistics
from tomoformer.models.registry import register_model

__all__ = ["RTIModel", "ThresholdModel", "fill_from_neighbours", "rti", "threshold"]

LOGIT_CLIP = 10.0


def _iou_counts(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """pred [K, P] bool, target [P] bool -> intersection [K], union [K] counts."""
    return (pred & target).sum(-1).double(), (pred | target).sum(-1).double()


def _iou(inter: Tensor, union: Tensor) -> Tensor:
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


def fill_from_neighbours(signals: Tensor, radius: int = 2) -> Tensor:
    """Fill unmeasured cells of every frame with the mean of the measured cells within ``radius`` cells.

    For sparse data (a few percent of the cells per frame) the per-pixel maximum over frames sees only a handful
    of values per cell; filling first lets each cell borrow its neighbours' measurements. Cells without any
    measured neighbour stay NaN.

    Args:
        signals: [B, T, H, W] dB, NaN = missing.
        radius: half-width of the square window, cells.

    Returns:
        [B, T, H, W] float32, measured cells unchanged.
    """
    B, T, H, W = signals.shape
    valid = torch.isfinite(signals)
    values = torch.where(valid, signals.float(), 0.0).reshape(B * T, 1, H, W)
    k = 2 * radius + 1
    kernel = torch.ones(1, 1, k, k, device=signals.device)
    total = F.conv2d(values, kernel, padding=radius).reshape(B, T, H, W)
    count = F.conv2d(valid.float().reshape(B * T, 1, H, W), kernel, padding=radius).reshape(B, T, H, W)
    filled = torch.where(count > 0, total / count.clamp_min(1.0), float("nan"))
    return torch.where(valid, signals.float(), filled)


class ThresholdModel(nn.Module):
    """Building where a pixel was never received, or where its best signal over the frames is low.

    "Best signal" is the per-pixel maximum over frames of the normalised dB (20 dB units, relative to each
    frame's median) or, when transmitter positions are known, of the signal relative to free space (the
    excess over the free-space prediction): a cell that some transmitter reaches in line of sight is outdoors,
    whatever its distance. ``fit`` scans ``num_candidates`` thresholds on each available feature and keeps the
    rule with the best IoU over all fit batches: "never received or feature < threshold" (mode 1) or "never
    received" alone (mode 0).

    Args:
        num_candidates, low, high: the thresholds scanned by ``fit`` (20 dB units).
        sharpness: logit slope per unit of margin.
        fill: "none" or "neighbours": fill each frame's unmeasured cells from measured cells within
            ``fill_radius`` (:func:`fill_from_neighbours`) before the statistics, for sparse data.
        fill_radius: cells.
    """

    requires_fit = True
    FEATURES = ("db_max", "ex_max")

    def __init__(
        self,
        num_candidates: int = 121,
        low: float = -3.0,
        high: float = 3.0,
        sharpness: float = 20.0,
        fill: str = "none",
        fill_radius: int = 2,
    ) -> None:
        super().__init__()
        if fill not in ("none", "neighbours"):
            raise ConfigError(f"threshold: fill must be 'none' or 'neighbours', got {fill!r}")
        if fill_radius < 1:
            raise ConfigError(f"threshold: fill_radius must be >= 1, got {fill_radius}")
        self.sharpness, self.fill, self.fill_radius = sharpness, fill, fill_radius
        self.register_buffer("candidates", torch.linspace(low, high, num_candidates))
        self.register_buffer("threshold", torch.tensor(float(low)))
        self.register_buffer("mode", torch.tensor(0, dtype=torch.long))
        self.register_buffer("feature", torch.tensor(0, dtype=torch.long))  # index into FEATURES
        self.register_buffer("fit_iou", torch.tensor(float("nan")))

    def _inputs(self, signals: Tensor, tx_pos: Tensor | None) -> tuple[Tensor, Tensor]:
        """-> features [F, B, H, W] (db_max, and ex_max when tx_pos is given), never received [B, H, W]."""
        if self.fill == "neighbours":
            signals = fill_from_neighbours(signals, self.fill_radius)
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

    def describe(self) -> str:
        """One line: the rule, feature and threshold ``fit`` chose, and its IoU on the fit data."""
        fill = f", fill={self.fill} (radius {self.fill_radius})" if self.fill != "none" else ""
        if int(self.mode) == 0:
            return f"threshold: rule 'never received'{fill}; fit IoU {float(self.fit_iou):.3f}"
        feature = self.FEATURES[int(self.feature)]
        return (
            f"threshold: rule 'never received or {feature} < {float(self.threshold):.3f}' (20 dB units){fill}; "
            f"fit IoU {float(self.fit_iou):.3f}"
        )

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
    free space, relative to each frame's line-of-sight level) is modelled as y = W x, with x the per-cell
    attenuation image and W the ellipse model: w_ij = 1/sqrt(d_link) when cell j lies inside the ellipse with foci
    tx and rx whose path excess is the ellipse width (cells), else 0. x solves the Tikhonov problem
    min |W x - y|^2 + alpha (|Dx x|^2 + |Dy x|^2 + eps |x|^2) (finite-difference smoothness) with LSQR.

    ``fit`` tunes on the fit data, by IoU with the best threshold on x: alpha over ``alpha_grid`` (extended by
    factors of 10 while the best value sits on the grid's edge, at most ``max_extensions`` times; if it still
    does, ``alpha_on_edge`` says so), then the ellipse width over ``ellipse_grid`` and the links kept per sample
    over ``links_grid``, then alpha again. Every chosen value is a buffer, so checkpoints keep it.

    Args:
        ellipse_excess: ellipse width (path excess, cells) used before ``fit``.
        max_links: links kept per sample (a seeded random subset, bounding the cost) before ``fit``.
        alpha_grid, ellipse_grid, links_grid: the values ``fit`` scans.
        max_extensions: how often ``fit`` may extend the alpha grid past an edge.
        iter_lim: LSQR iterations.
        max_fit_samples: samples used by ``fit``.
    """

    requires_fit = True

    def __init__(
        self,
        ellipse_excess: float = 0.5,
        max_links: int = 8000,
        alpha_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
        ellipse_grid: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0),
        links_grid: tuple[int, ...] = (2000, 8000, 32000),
        max_extensions: int = 3,
        iter_lim: int = 200,
        eps: float = 1e-2,
        max_fit_samples: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        grids = {"alpha_grid": alpha_grid, "ellipse_grid": ellipse_grid, "links_grid": links_grid}
        for name, grid in grids.items():
            if not grid or any(not float(v) > 0 for v in grid):
                raise ConfigError(f"rti: {name} must be a non-empty list of positive numbers, got {grid!r}")
        self.alpha_grid = tuple(sorted(float(a) for a in alpha_grid))
        self.ellipse_grid = tuple(float(e) for e in ellipse_grid)
        self.links_grid = tuple(int(n) for n in links_grid)
        self.max_extensions, self.iter_lim, self.eps = max_extensions, iter_lim, eps
        self.max_fit_samples, self.seed = max_fit_samples, seed
        start_alpha = self.alpha_grid[len(self.alpha_grid) // 2]
        self.register_buffer("alpha", torch.tensor(start_alpha))
        self.register_buffer("ellipse_excess", torch.tensor(float(ellipse_excess)))
        self.register_buffer("max_links", torch.tensor(int(max_links), dtype=torch.long))
        self.register_buffer("alpha_on_edge", torch.tensor(False))
        self.register_buffer("threshold", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("fit_iou", torch.tensor(float("nan")))

    # ----- the linear model ---------------------------------------------------------------------------------
    def _links(self, signals: Tensor, tx_pos: Tensor, max_links: int) -> tuple[Tensor, Tensor, Tensor]:
        """One sample: signals [T, H, W], tx_pos [T, 3] -> tx [L, 2], rx [L, 2] (row, col cells), y [L] dB.

        The kept links are a prefix of one seeded permutation, so a larger ``max_links`` keeps a superset."""
        feats, _ = frame_features(signals[None], tx_pos[None])
        excess, ok = feats[0, :, 3], (feats[0, :, 1] > 0) & (feats[0, :, 4] == 0)
        t, r, c = torch.nonzero(ok, as_tuple=True)
        if len(t) > max_links:
            gen = torch.Generator().manual_seed(self.seed)
            keep = torch.randperm(len(t), generator=gen)[:max_links].sort().values.to(t.device)
            t, r, c = t[keep], r[keep], c[keep]
        tx = tx_pos[t, :2].float()
        rx = torch.stack([r, c], dim=-1).float()
        return tx, rx, -excess[t, r, c] * DB_SCALE  # attenuation, dB

    @staticmethod
    def _weights(tx: Tensor, rx: Tensor, H: int, W: int, ellipse: float, chunk: int = 512) -> sp.csr_matrix:
        """Ellipse weight matrix [L, H*W] for links tx -> rx, ellipse width ``ellipse`` cells."""
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
            inside = path < (d_link + ellipse)[:, None]
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

    def _systems(
        self, signals: Tensor, tx_pos: Tensor | None, ellipse: float, max_links: int
    ) -> list[tuple[sp.csr_matrix, np.ndarray]]:
        if tx_pos is None:
            raise DataError("rti needs transmitter positions (tx_pos), but the data has none")
        H, W = signals.shape[-2:]
        out = []
        for b in range(signals.shape[0]):
            tx, rx, y = self._links(signals[b], tx_pos[b], max_links)
            out.append((self._weights(tx, rx, H, W, ellipse), y.double().cpu().numpy()))
        return out

    def image(self, signals: Tensor, tx_pos: Tensor | None, alpha: float | None = None) -> Tensor:
        """signals [B, T, H, W] dB, tx_pos [B, T, 3] cells -> attenuation image x [B, H, W]."""
        H, W = signals.shape[-2:]
        alpha = float(self.alpha) if alpha is None else alpha
        systems = self._systems(signals, tx_pos, float(self.ellipse_excess), int(self.max_links))
        xs = [self._solve(Wm, y, alpha, H, W) for Wm, y in systems]
        return torch.from_numpy(np.stack(xs)).float().reshape(-1, H, W).to(signals.device)

    # ----- fit and predict ----------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, batches: Iterable[dict[str, Tensor]]) -> None:
        """Tune alpha, ellipse width, links per sample and the threshold on x for the best IoU on ``batches``."""
        samples: list[tuple[Tensor, Tensor | None]] = []
        targets = []
        for batch in batches:
            k = min(self.max_fit_samples - len(samples), batch["signals"].shape[0])
            tx = batch.get("tx_pos")
            samples += [(batch["signals"][i : i + 1], None if tx is None else tx[i : i + 1]) for i in range(k)]
            targets.append(batch["buildings"][:k].flatten().cpu() > 0.5)
            if len(samples) >= self.max_fit_samples:
                break
        if not samples:
            raise DataError("rti.fit got no batches")
        target = torch.cat(targets)
        systems: dict[tuple[float, int], list] = {}
        scores: dict[tuple[float, int, float], tuple[float, float, float]] = {}

        def score(ellipse: float, links: int, alpha: float) -> tuple[float, float, float]:
            """-> (IoU, threshold, logit scale) of the best threshold on x for these settings."""
            key = (ellipse, links, alpha)
            if key not in scores:
                if (ellipse, links) not in systems:
                    systems[ellipse, links] = [
                        (*self._systems(s, tx, ellipse, links)[0], tuple(s.shape[-2:])) for s, tx in samples
                    ]
                x = torch.from_numpy(
                    np.concatenate([self._solve(Wm, y, alpha, *hw) for Wm, y, hw in systems[ellipse, links]])
                )
                candidates = torch.quantile(x.float(), torch.linspace(0.01, 0.99, 99, dtype=torch.float32))
                iou = _iou(*_iou_counts(x[None] > candidates.double()[:, None], target))
                k = int(torch.argmax(iou))
                spread = float(x.std()) if x.numel() > 1 else 1.0
                scores[key] = (float(iou[k]), float(candidates[k]), 4.0 / max(spread, 1e-12))
            return scores[key]

        def best_alpha(ellipse: float, links: int) -> tuple[float, bool]:
            """The best alpha, extending the grid by 10x past whichever edge wins; -> (alpha, still on edge)."""
            grid = list(self.alpha_grid)
            for extension in range(self.max_extensions + 1):
                ious = [score(ellipse, links, a)[0] for a in grid]
                k = int(np.argmax(ious))  # ties favour the weaker regularisation
                on_edge = len(grid) > 1 and k in (0, len(grid) - 1)
                if not on_edge or extension == self.max_extensions:
                    return grid[k], on_edge
                grid = [grid[0] / 10.0, *grid] if k == 0 else [*grid, grid[-1] * 10.0]
            raise AssertionError("unreachable")

        ellipse, links = float(self.ellipse_excess), int(self.max_links)
        alpha, _ = best_alpha(ellipse, links)
        ellipse = max(self.ellipse_grid, key=lambda e: score(e, links, alpha)[0])
        links = max(self.links_grid, key=lambda n: score(ellipse, n, alpha)[0])
        alpha, on_edge = best_alpha(ellipse, links)
        iou, threshold, scale = score(ellipse, links, alpha)
        self.alpha.fill_(alpha)
        self.ellipse_excess.fill_(ellipse)
        self.max_links.fill_(links)
        self.alpha_on_edge.fill_(on_edge)
        self.fit_iou.fill_(iou)
        self.threshold.fill_(threshold)
        self.scale.fill_(scale)

    def describe(self) -> str:
        """One line: the values ``fit`` chose and its IoU on the fit data."""
        edge = " (still on the edge of the extended alpha grid)" if bool(self.alpha_on_edge) else ""
        return (
            f"rti: alpha={float(self.alpha):.3g}{edge}, ellipse width={float(self.ellipse_excess):.3g} cells, "
            f"links per sample={int(self.max_links)}, threshold={float(self.threshold):.3g} dB; "
            f"fit IoU {float(self.fit_iou):.3f}"
        )

    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        """signals [B, T, H, W] dB, tx_pos [B, T, 3] cells (required) -> logits [B, H, W]."""
        x = self.image(signals, tx_pos)
        return ((x - self.threshold) * self.scale).clamp(-LOGIT_CLIP, LOGIT_CLIP).float()


@register_model
def threshold(**kwargs: Any) -> ThresholdModel:
    """Never-received rule + best threshold on the per-pixel max of the signal (``fill=neighbours``: sparse data)."""
    return ThresholdModel(**kwargs)


@register_model
def rti(**kwargs: Any) -> RTIModel:
    """Radio tomographic imaging (ellipse model, Tikhonov least squares), tuned and thresholded by ``fit``."""
    return RTIModel(**kwargs)
