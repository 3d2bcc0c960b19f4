"""The torch :class:`Router`: cluster memberships of standardised features, from a fitted clusterer's arrays.

The clusterer is fitted with scikit-learn by the experts pipeline (:mod:`tomoformer.experts.clustering`); its
arrays (centres, assignment points, temperature, GMM parameters) live here in buffers, so a checkpoint rebuilds the
router without scikit-learn or pickles.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from tomoformer.errors import ConfigError

__all__ = ["METHODS", "Router"]

METHODS = ("kmeans", "dbscan", "gmm")


class Router(nn.Module):
    """Cluster memberships of standardised features z [B, F] -> [B, K], from a fitted clusterer's arrays.

    Buffer shapes depend only on (method, K, F, M), which the model options record, so a checkpoint rebuilds it.
    """

    def __init__(self, method: str = "kmeans", num_clusters: int = 2, num_features: int = 15, num_points: int = 0):
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"clusterer must be one of {', '.join(METHODS)}, got {method!r}")
        K, F = num_clusters, num_features
        M = num_points if method == "dbscan" else K
        self.method = method
        self.num_clusters = K
        self.register_buffer("centres", torch.zeros(K, F))
        self.register_buffer("points", torch.zeros(M, F))
        self.register_buffer("point_labels", torch.arange(M) % K)
        self.register_buffer("temperature", torch.tensor(1.0))
        if method == "gmm":
            self.register_buffer("gmm_prec_chol", torch.eye(F).repeat(K, 1, 1))
            self.register_buffer("gmm_log_weights", torch.full((K,), -math.log(K)))

    def load_fit(self, fit: Any) -> Router:
        """Copy the arrays of ``fit`` (a ``tomoformer.experts.clustering.ClusterFit``: ``method``, ``k``,
        ``centres``, ``points``, ``point_labels``, ``temperature``, GMM arrays; same method and sizes) into the
        buffers."""
        if fit.method != self.method or fit.k != self.num_clusters or fit.points.shape != tuple(self.points.shape):
            raise ConfigError("cluster fit does not match the router's method or sizes")
        for name in ("centres", "points", "point_labels", "gmm_prec_chol", "gmm_log_weights"):
            if hasattr(self, name) and getattr(fit, name) is not None:
                getattr(self, name).copy_(torch.as_tensor(getattr(fit, name)))
        self.temperature.fill_(fit.temperature)
        return self

    def log_memberships(self, z: Tensor) -> Tensor:
        """Log posterior of each cluster: z [B, F] -> [B, K] (rows logsumexp to 0)."""
        z = z.float()
        if self.method == "gmm":
            # log N(z | mu_k, Sigma_k) + log w_k, with Sigma_k^-1 = L L^T (sklearn's precisions_cholesky_).
            y = torch.einsum("bf,kfg->bkg", z, self.gmm_prec_chol) - torch.einsum(
                "kf,kfg->kg", self.points, self.gmm_prec_chol
            )
            log_det = torch.diagonal(self.gmm_prec_chol, dim1=1, dim2=2).log().sum(-1)
            logits = -0.5 * (y**2).sum(-1) + log_det + self.gmm_log_weights
        else:
            # Differences, not torch.cdist: exact, and cdist has no ONNX lowering.
            d2 = ((z[:, None, :] - self.points[None]) ** 2).sum(-1)  # [B, M]
            own = self.point_labels[None, :] == torch.arange(self.num_clusters, device=z.device)[:, None]  # [K, M]
            per_cluster = torch.where(own[None], d2[:, None, :], torch.inf).amin(-1)  # [B, K]
            logits = -per_cluster / (2 * self.temperature)
        return torch.log_softmax(logits, dim=-1)

    def forward(self, z: Tensor) -> Tensor:
        """Memberships [B, K] (rows sum to 1)."""
        return self.log_memberships(z).exp()

    def offsets(self, z: Tensor, assign: Tensor) -> Tensor:
        """z minus the centre of its assigned cluster: [B, F] (standardised units)."""
        return z.float() - self.centres[assign]
