"""L2 normalisation, standardisation, PCA, whitening and UMAP before clustering."""

import numpy as np
import pytest
from fakes import blobs

from imageclust.clustering.params import ClusterParams
from imageclust.clustering.preprocess import FeatureTransform, UmapPlacement, l2_normalize, torch_threads_kept

# ---------------------------------------------------------------- FeatureTransform


def fit_transform(x, l2, pca_dim, whiten, **more):
    """The fitted transform; its own output on the fitting data must be what ``apply`` gives."""
    params = ClusterParams(l2_normalize=l2, pca_dim=pca_dim, whiten=whiten, **more)
    t, fitted = FeatureTransform.fit(x, params, 0)
    if params.umap_dim is None:
        np.testing.assert_allclose(fitted, t.apply(x), rtol=1e-5, atol=1e-6)
    return t


def random_features(n=40, d=6, seed=0):
    rng = np.random.default_rng(seed)
    # correlated, anisotropic, off-centre
    return (rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3.0).astype(np.float32)


def test_l2_only_transform():
    x = random_features()
    t = fit_transform(x, True, None, False)
    assert t.components is None
    y = t.apply(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(y, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-6)
    assert set(t.to_arrays()) == {"l2_normalize"}


def test_l2_normalize_leaves_zero_rows_finite():
    y = l2_normalize(np.array([[0.0, 0.0], [3.0, 4.0]]))
    np.testing.assert_allclose(y, [[0.0, 0.0], [0.6, 0.8]])


def test_identity_transform():
    x = random_features()
    t = fit_transform(x, False, None, False)
    np.testing.assert_array_equal(t.apply(x), x)


def test_pca_transform_projects_centred_data():
    x = random_features()
    t = fit_transform(x, False, 3, False)
    y = t.apply(x)
    assert y.shape == (40, 3)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-4)  # centred on the fitting data
    np.testing.assert_allclose(t.components @ t.components.T, np.eye(3), atol=1e-5)  # orthonormal
    np.testing.assert_array_equal(t.scale, np.ones(3, dtype=np.float32))
    var = y.var(0, ddof=1)
    assert (np.diff(var) <= 1e-4).all()  # sorted by explained variance
    # the 3 leading directions keep most of the variance of the centred data
    total = ((x - x.mean(0)) ** 2).sum(1).mean() * 40 / 39
    assert var.sum() <= total + 1e-3 and var.sum() > 0.5 * total


def test_whitening_gives_unit_variance_per_component():
    x = random_features()
    t = fit_transform(x, False, 4, True)
    y = t.apply(x)
    assert y.shape == (40, 4)
    np.testing.assert_allclose(y.var(0, ddof=1), 1.0, rtol=1e-3)
    # components are uncorrelated after whitening
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(4), atol=1e-3)


def test_whiten_without_pca_dim_keeps_every_dimension():
    x = random_features(d=5)
    y = fit_transform(x, True, None, True).apply(x)
    assert y.shape == (40, 5)
    # l2-normalised 5-d data loses one degree of freedom at most; the leading 4 have unit variance
    np.testing.assert_allclose(y.var(0, ddof=1)[:4], 1.0, rtol=1e-3)


def test_pca_dim_capped_by_samples():
    x = random_features(n=4, d=6)
    t = fit_transform(x, False, 10, False)
    assert t.components.shape == (4, 6)


@pytest.mark.parametrize(
    "l2, pca_dim, whiten", [(True, None, False), (False, 3, False), (True, 3, True), (False, None, True)]
)
def test_transform_arrays_round_trip(tmp_path, l2, pca_dim, whiten):
    x = random_features()
    t = fit_transform(x, l2, pca_dim, whiten)
    np.savez(tmp_path / "t.npz", **t.to_arrays())
    with np.load(tmp_path / "t.npz") as f:
        back = FeatureTransform.from_arrays(dict(f))
    assert back.l2_normalize is l2
    new = random_features(n=7, seed=1)
    np.testing.assert_array_equal(back.apply(new), t.apply(new))


def test_standardize_gives_zero_mean_unit_variance_and_keeps_constant_features_finite():
    x = random_features()
    x[:, 2] = 7.0
    t = fit_transform(x, False, None, False, standardize=True)
    y = t.apply(x)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.delete(y.std(0), 2), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(y[:, 2], 0.0)
    back = FeatureTransform.from_arrays(t.to_arrays())
    np.testing.assert_array_equal(back.apply(x[:5]), y[:5])


def test_umap_leaves_pytorchs_thread_count_alone():
    """umap-learn's numba kernels reset the OpenMP thread count PyTorch shares; features computed
    after a UMAP fit in the same process then differed in the last digits from another process's."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        UmapPlacement.fit(blobs(n_per=20)[0], 2, ClusterParams(method="kmeans", k=3).umap, seed=0)
        assert torch.get_num_threads() == 1
        with torch_threads_kept():
            torch.set_num_threads(3)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_umap_keeps_the_fitted_embedding_and_places_new_points_by_their_neighbours():
    x, labels = blobs(n_per=40)
    params = ClusterParams(
        l2_normalize=False, standardize=True, pca_dim=4, umap_dim=2, umap={"num_neighbors": 10, "epochs": 100}
    )
    t, fitted = FeatureTransform.fit(x, params, 0)
    assert fitted.shape == (120, 2) and fitted.dtype == np.float32
    np.testing.assert_array_equal(fitted, t.umap.embedding)
    # a new point sitting on a training point lands near that point's embedding; one near a blob lands in it
    spread = np.linalg.norm(fitted - fitted.mean(0), axis=1).mean()
    assert (np.linalg.norm(t.apply(x[:3]) - fitted[:3], axis=1) < 0.1 * spread).all()
    centres = np.stack([fitted[labels == c].mean(0) for c in range(3)])
    fresh = np.eye(5, dtype=np.float32)[:3] * 5 + 0.05
    placed = t.apply(fresh)
    assert np.linalg.norm(placed[:, None] - centres[None], axis=2).argmin(1).tolist() == [0, 1, 2]
    back = FeatureTransform.from_arrays(t.to_arrays())
    np.testing.assert_array_equal(back.apply(fresh), placed)
