import numpy as np
import pytest
import torch

from tomoformer.errors import ConfigError
from tomoformer.experts.clustering import METHODS, ClusterFit, fit_clusters
from tomoformer.models.experts.router import Router


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0, 0], [8, 0, 0, 0], [0, 8, 0, 0]], dtype=float)
    truth = np.repeat(np.arange(3), 30)
    return centres[truth] + rng.normal(0, 1, (90, 4)), truth


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    # Cluster ids are arbitrary: score the best one-to-one match through the contingency table.
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    return float(table.max(1).sum() / len(a))


@pytest.mark.parametrize("method", METHODS)
def test_finds_blobs_and_router_reproduces_labels(method: str) -> None:
    x, truth = _blobs()
    fit = fit_clusters(x, method, k=None if method != "kmeans" else 3, seed=0)
    assert fit.k == 3 and _agreement(fit.labels, truth) > 0.95
    router = Router(method, fit.k, x.shape[1], len(fit.points)).load_fit(fit)
    z = torch.as_tensor((x - fit.mean) / fit.scale, dtype=torch.float32)
    member = router(z)
    torch.testing.assert_close(member.sum(1), torch.ones(len(x)))
    np.testing.assert_array_equal(member.argmax(1).numpy(), fit.labels)
    offsets = router.offsets(z, member.argmax(1))
    assert offsets.abs().mean() < z.abs().mean()  # nearer to their own centre than to the origin


def test_kmeans_picks_k_by_silhouette_and_gmm_matches_sklearn() -> None:
    from sklearn.mixture import GaussianMixture

    x, _ = _blobs(1)
    assert fit_clusters(x, "kmeans", k=None, k_max=5).k == 3
    fit = fit_clusters(x, "gmm", k=3, seed=0)
    z = (x - fit.mean) / fit.scale
    gm = GaussianMixture(3, covariance_type="full", reg_covar=1e-3, random_state=0).fit(z)
    router = Router("gmm", 3, 4).load_fit(fit)
    probs = router(torch.as_tensor(z, dtype=torch.float32)).numpy()
    order = np.argsort(-np.bincount(gm.predict(z)), kind="stable")  # clusters are numbered by size
    np.testing.assert_allclose(probs, gm.predict_proba(z)[:, order], atol=1e-3)
    assert (np.diff(np.bincount(fit.labels)) <= 0).all()


def test_dbscan_noise_goes_to_nearest_cluster_and_arrays_round_trip(tmp_path) -> None:
    x, _ = _blobs(2)
    x = np.concatenate([x, [[4.0, 4.0, 0.0, 0.0]]])  # an outlier between the blobs
    fit = fit_clusters(x, "dbscan", eps=0.6, min_samples=4)
    assert (fit.labels >= 0).all() and fit.k >= 2
    with open(tmp_path / "c.npz", "wb") as f:
        np.savez(f, **fit.arrays())
    back = ClusterFit.from_arrays(dict(np.load(tmp_path / "c.npz", allow_pickle=False)))
    assert back.method == "dbscan" and back.k == fit.k
    np.testing.assert_array_equal(back.points, fit.points)


def test_bad_options() -> None:
    x, _ = _blobs()
    with pytest.raises(ConfigError):
        fit_clusters(x, "spectral")
    with pytest.raises(ConfigError):
        fit_clusters(x, "kmeans", k=1000)
    with pytest.raises(ConfigError, match="no cluster"):
        fit_clusters(x, "dbscan", eps=1e-6, min_samples=5)
