"""Clustering of per-sample features with scikit-learn; :class:`~tomoformer.models.experts.router.Router` reproduces
its decisions in torch.

The fitted clusterer is stored as plain arrays (never pickled): the scaler's mean and scale, the cluster centres,
and per method the points that define the assignment:

* ``kmeans``: the centres; a sample goes to the nearest centre (as ``KMeans.predict``); ``k`` fixed or chosen by
  the silhouette score over 2..k_max.
* ``dbscan``: the core samples and their labels; noise points and new samples go to the cluster of the nearest
  core sample (DBSCAN itself cannot predict); ``eps`` fixed or the 90th percentile of the distance to the
  ``min_samples``-th neighbour.
* ``gmm``: full-covariance Gaussian mixture (means, Cholesky factors of the precisions, log weights); memberships
  are its posterior (``predict_proba``); ``k`` fixed or chosen by BIC.

Clusters are numbered by size, largest first. Soft memberships of ``kmeans``/``dbscan`` are
softmax(-d^2 / (2 tau)) with tau the mean squared distance of the training samples to their own centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tomoformer.errors import ConfigError, DataError
from tomoformer.models.experts.router import METHODS

__all__ = ["METHODS", "ClusterFit", "fit_clusters"]


@dataclass
class ClusterFit:
    """A fitted clusterer as arrays: everything the ``Router`` needs (``labels`` are the training labels)."""

    method: str
    mean: np.ndarray  # [F] scaler mean
    scale: np.ndarray  # [F] scaler scale
    centres: np.ndarray  # [K, F] standardised units
    points: np.ndarray  # [M, F] assignment points (kmeans: centres, dbscan: core samples, gmm: means)
    point_labels: np.ndarray  # [M] int
    temperature: float
    labels: np.ndarray  # [N] cluster of each training sample
    gmm_prec_chol: np.ndarray | None = None  # [K, F, F]
    gmm_log_weights: np.ndarray | None = None  # [K]

    @property
    def k(self) -> int:
        return int(self.centres.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything as named arrays (for ``np.savez``; read back with :meth:`from_arrays`)."""
        out = {k: np.asarray(v) for k, v in vars(self).items() if v is not None and k != "method"}
        out["method"] = np.array(self.method)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ClusterFit:
        values = {k: np.asarray(v) for k, v in arrays.items()}
        values["method"] = str(values["method"])
        values["temperature"] = float(values["temperature"])
        return cls(**values)


def fit_clusters(
    features: np.ndarray,
    method: str = "kmeans",
    k: int | None = None,
    k_max: int = 6,
    eps: float | None = None,
    min_samples: int = 5,
    seed: int = 0,
) -> ClusterFit:
    """Standardise ``features`` [N, F] and cluster them with ``method`` (see the module docstring)."""
    from sklearn.cluster import DBSCAN, KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import StandardScaler

    if method not in METHODS:
        raise ConfigError(f"clusterer must be one of {', '.join(METHODS)}, got {method!r}")
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    if x.ndim != 2 or n < 2 or not np.isfinite(x).all():
        raise DataError(f"clustering needs finite features [N >= 2, F], got shape {x.shape}")
    if k is not None and not 1 <= k <= n:
        raise ConfigError(f"k must lie in 1..{n} (the number of samples), got {k}")
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    candidates = [k] if k is not None else list(range(2, max(2, min(k_max, n - 1)) + 1))
    prec_chol = log_w = None
    if method == "kmeans":
        best = None
        for kk in candidates:
            km = KMeans(kk, n_init=10, random_state=seed).fit(z)
            distinct = len(np.unique(km.labels_))
            score = silhouette_score(z, km.labels_) if 1 < distinct < n else -1.0
            if best is None or score > best[0]:
                best = (score, km)
        assert best is not None
        labels, centres = best[1].labels_, best[1].cluster_centers_
        points, point_labels = centres, np.arange(len(centres))
    elif method == "gmm":
        best = None
        for kk in candidates:
            gm = GaussianMixture(kk, covariance_type="full", reg_covar=1e-3, random_state=seed).fit(z)
            score = -gm.bic(z)
            if best is None or score > best[0]:
                best = (score, gm)
        assert best is not None
        gm = best[1]
        labels, centres = gm.predict(z), gm.means_
        points, point_labels = gm.means_, np.arange(len(gm.means_))
        prec_chol, log_w = gm.precisions_cholesky_, np.log(gm.weights_)
    else:
        eps = eps if eps is not None else _auto_eps(z, min_samples)
        db = DBSCAN(eps=eps, min_samples=min_samples).fit(z)
        core = db.core_sample_indices_
        if len(core) == 0:
            raise ConfigError(f"dbscan found no cluster (eps={eps:.3g}, min_samples={min_samples}); raise eps")
        points, point_labels = z[core], db.labels_[core]
        # Noise goes to the cluster of its nearest core sample.
        nearest = ((z[:, None, :] - points[None]) ** 2).sum(-1).argmin(1)
        labels = np.where(db.labels_ >= 0, db.labels_, point_labels[nearest])
        centres = np.stack([z[labels == c].mean(0) for c in range(int(labels.max()) + 1)])
    # Canonical order, largest cluster first: cluster ids then mean the same across seeds and methods.
    order = np.argsort(-np.bincount(labels, minlength=len(centres)), kind="stable")
    rank = np.argsort(order)
    labels, centres, point_labels = rank[labels], centres[order], rank[np.asarray(point_labels)]
    if method == "gmm":
        points, prec_chol, log_w = points[order], prec_chol[order], log_w[order]
    d2 = ((z - centres[labels]) ** 2).sum(1)
    return ClusterFit(
        method=method,
        mean=scaler.mean_.astype(np.float32),
        scale=scaler.scale_.astype(np.float32),
        centres=centres.astype(np.float32),
        points=np.asarray(points, dtype=np.float32),
        point_labels=np.asarray(point_labels, dtype=np.int64),
        temperature=float(max(d2.mean(), 1e-3)),
        labels=np.asarray(labels, dtype=np.int64),
        gmm_prec_chol=None if prec_chol is None else prec_chol.astype(np.float32),
        gmm_log_weights=None if log_w is None else log_w.astype(np.float32),
    )


def _auto_eps(z: np.ndarray, min_samples: int) -> float:
    from sklearn.neighbors import NearestNeighbors

    k = min(min_samples, len(z) - 1)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)
    return float(np.quantile(dist[:, -1], 0.9))
