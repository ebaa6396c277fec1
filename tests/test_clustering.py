"""Feature preprocessing, k-means with soft assignments, and the cluster stage on written features."""

import numpy as np
import pytest

from imageclust.clustering import (
    ASSIGNMENTS_FILE,
    METHODS,
    MODEL_FILE,
    Clustering,
    FeatureTransform,
    load_cluster_model,
    run_clustering,
)
from imageclust.clustering.kmeans import fit_kmeans, student_t_assignment
from imageclust.clustering.preprocess import UmapPlacement, l2_normalize, torch_threads_kept
from imageclust.config import ClusterParams, DataParams, GlobalParams
from imageclust.errors import ParamsError
from imageclust.metrics import clustering_accuracy
from imageclust.tables import UNLABELED, FeatureTable, read_assignments, read_features, write_features


def blobs(n_per=20, d=5, seed=0, spread=0.05):
    """Three tight blobs in different directions (they stay apart after L2 normalisation)."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((3, d))
    centres[0, 0], centres[1, 1], centres[2, 2] = 5.0, 5.0, 5.0
    labels = np.repeat(np.arange(3), n_per)
    x = centres[labels] + rng.normal(scale=spread * 5, size=(3 * n_per, d))
    order = rng.permutation(len(labels))  # interleave the classes
    return x[order].astype(np.float32), labels[order]


def write_blobs(path, n_per=20, seed=0, test_every=4, unlabeled=()):
    x, labels = blobs(n_per=n_per, seed=seed)
    n = len(labels)
    splits = np.where(np.arange(n) % test_every == 0, "test", "train").astype(object)
    stored = labels.copy()
    stored[list(unlabeled)] = UNLABELED
    write_features(path, FeatureTable(ids=np.array([f"s{i:03d}" for i in range(n)], dtype=object), splits=splits,
                                      labels=stored, vectors=x), {"backbone": "test"}, shard_rows=17)
    return x, labels, splits


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


@pytest.mark.parametrize("l2, pca_dim, whiten", [(True, None, False), (False, 3, False), (True, 3, True),
                                                  (False, None, True)])
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
    params = ClusterParams(l2_normalize=False, standardize=True, pca_dim=4, umap_dim=2,
                           umap={"num_neighbors": 10, "epochs": 100})
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


# ---------------------------------------------------------------- assignments


def test_student_t_by_hand():
    # x = 0, centroids at squared distances 1 and 4: q ∝ (1/2, 1/5) -> (5/7, 2/7).
    q = student_t_assignment(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 2.0]]))
    np.testing.assert_allclose(q, [[5 / 7, 2 / 7]], rtol=1e-12)


def test_student_t_rows_sum_to_one_and_argmax_is_nearest():
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(50, 4)), rng.normal(size=(6, 4))
    q = student_t_assignment(x, c)
    assert q.shape == (50, 6) and (q > 0).all()
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-12)
    d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(q.argmax(1), d2.argmin(1))


def test_student_t_point_on_centroid_is_finite():
    c = np.array([[1.0, 1.0], [1.0, 1.0 + 1e-9]], dtype=np.float32)
    q = student_t_assignment(c[:1], c)
    assert np.isfinite(q).all() and (q >= 0).all()


def test_clustering_predict_in_chunks_matches_unchunked():
    rng = np.random.default_rng(1)
    x, c = rng.normal(size=(23, 3)), rng.normal(size=(4, 3))
    model = Clustering(centroids=c)
    full = model.predict(x)
    chunked = model.predict(x, chunk=5)
    np.testing.assert_array_equal(full[0], chunked[0])
    np.testing.assert_allclose(full[1], chunked[1])
    assert full[1].dtype == np.float32
    q = student_t_assignment(x, c)
    np.testing.assert_allclose(full[1], q.max(1), rtol=1e-6)


def test_fit_kmeans_on_blobs():
    x, labels = blobs()
    model = fit_kmeans(x, ClusterParams(k=3, kmeans={"n_init": 2}), 0)
    assert METHODS["kmeans"] is fit_kmeans
    assert model.centroids.shape == (3, 5) and model.centroids.dtype == np.float32
    clusters, _ = model.predict(x)
    assert clustering_accuracy(labels, clusters) == 1.0
    assert model.stats["inertia"] > 0 and model.stats["iterations"] >= 1


# ---------------------------------------------------------------- the cluster stage


def params(**cluster):
    cluster = {"k": 3, "kmeans": {"n_init": 3}, **cluster}
    return GlobalParams(seed=0), DataParams(train_splits=["train"]), ClusterParams(**cluster)


@pytest.mark.parametrize("cluster", [{}, {"pca_dim": 3, "whiten": True}, {"l2_normalize": False}])
def test_run_clustering_recovers_blobs(tmp_path, cluster):
    _, labels, splits = write_blobs(tmp_path / "features", unlabeled=[1, 2])
    stats = run_clustering(tmp_path / "features", tmp_path / "cluster", *params(**cluster))
    assert sorted(p.name for p in (tmp_path / "cluster").iterdir()) == [ASSIGNMENTS_FILE, MODEL_FILE]
    a = read_assignments(tmp_path / "cluster" / ASSIGNMENTS_FILE)
    features = read_features(tmp_path / "features")
    assert a.ids.tolist() == features.ids.tolist()
    assert a.splits.tolist() == splits.tolist()
    assert a.labels[1] == UNLABELED and a.labels[2] == UNLABELED  # labels carried through
    assert clustering_accuracy(labels, a.clusters) == 1.0  # test samples too, labelled or not
    assert set(a.clusters.tolist()) == {0, 1, 2}
    assert ((a.confidence > 1 / 3) & (a.confidence <= 1)).all()
    train = splits == "train"
    assert stats["method"] == "kmeans" and stats["k"] == 3
    assert stats["fit_samples"] == int(train.sum()) == 45
    assert stats["dim"] == (3 if cluster.get("pca_dim") else 5)
    assert stats["empty_clusters"] == 0
    assert "inertia" in stats and "iterations" in stats

    transform, model = load_cluster_model(tmp_path / "cluster")
    clusters, confidence = model.predict(transform.apply(features.vectors))
    np.testing.assert_array_equal(clusters, a.clusters)
    np.testing.assert_allclose(confidence, a.confidence, rtol=1e-6)


def test_run_clustering_fits_on_train_splits_only(tmp_path):
    x, labels, splits = write_blobs(tmp_path / "f1")
    run_clustering(tmp_path / "f1", tmp_path / "c1", *params())
    # Move every test sample far away: the fitted centroids must not change.
    moved = x.copy()
    moved[splits == "test"] += 100.0
    write_features(tmp_path / "f2", FeatureTable(read_features(tmp_path / "f1").ids, splits, labels, moved), {})
    run_clustering(tmp_path / "f2", tmp_path / "c2", *params())
    with np.load(tmp_path / "c1" / MODEL_FILE) as m1, np.load(tmp_path / "c2" / MODEL_FILE) as m2:
        np.testing.assert_array_equal(m1["centroids"], m2["centroids"])


def test_run_clustering_is_deterministic_for_a_seed(tmp_path):
    write_blobs(tmp_path / "f", seed=3)
    run_clustering(tmp_path / "f", tmp_path / "a", *params(kmeans={"n_init": 1}))
    run_clustering(tmp_path / "f", tmp_path / "b", *params(kmeans={"n_init": 1}))
    a, b = read_assignments(tmp_path / "a" / ASSIGNMENTS_FILE), read_assignments(tmp_path / "b" / ASSIGNMENTS_FILE)
    np.testing.assert_array_equal(a.clusters, b.clusters)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    with np.load(tmp_path / "a" / MODEL_FILE) as ma, np.load(tmp_path / "b" / MODEL_FILE) as mb:
        np.testing.assert_array_equal(ma["centroids"], mb["centroids"])


def test_seed_changes_kmeans_init_on_ambiguous_data(tmp_path):
    # Uniform noise, k = 5: different seeds give different local optima.
    rng = np.random.default_rng(0)
    n = 60
    write_features(tmp_path / "f", FeatureTable(np.array([f"s{i}" for i in range(n)], dtype=object),
                                                np.full(n, "train", dtype=object), np.zeros(n, dtype=np.int64),
                                                rng.uniform(size=(n, 4)).astype(np.float32)), {})
    g, d, c = params(k=5, kmeans={"n_init": 1}, l2_normalize=False)
    run_clustering(tmp_path / "f", tmp_path / "a", GlobalParams(seed=0), d, c)
    run_clustering(tmp_path / "f", tmp_path / "b", GlobalParams(seed=1), d, c)
    with np.load(tmp_path / "a" / MODEL_FILE) as ma, np.load(tmp_path / "b" / MODEL_FILE) as mb:
        assert not np.allclose(np.sort(ma["centroids"], 0), np.sort(mb["centroids"], 0))


def test_k_larger_than_training_samples(tmp_path):
    write_blobs(tmp_path / "f", n_per=2)  # 6 samples, 4 in train
    g, d, c = params(k=5)
    with pytest.raises(ParamsError) as info:
        run_clustering(tmp_path / "f", tmp_path / "out", g, d, c)
    message = str(info.value)
    assert "\n" not in message and message.startswith("params:")
    assert "cluster.k=5" in message and "4 training samples" in message
    assert not (tmp_path / "out").exists()


def test_train_split_absent_from_features(tmp_path):
    write_blobs(tmp_path / "f")
    with pytest.raises(ParamsError) as info:
        run_clustering(tmp_path / "f", tmp_path / "out", GlobalParams(seed=0), DataParams(train_splits=["unlabeled"]),
                       ClusterParams(k=3))
    message = str(info.value)
    assert "\n" not in message and message.startswith("params:")
    assert "data.train_splits" in message and "unlabeled" in message
    assert "test" in message and "train" in message  # the splits that exist
    assert not (tmp_path / "out").exists()


def test_several_train_splits(tmp_path):
    write_blobs(tmp_path / "f")
    stats = run_clustering(tmp_path / "f", tmp_path / "out", GlobalParams(seed=0),
                           DataParams(train_splits=["train", "test"]), ClusterParams(k=3, kmeans={"n_init": 2}))
    assert stats["fit_samples"] == 60


# ---------------------------------------------------------------- more methods, each with its rule for new points

ALL_METHODS = {
    "kmeans": {},
    "kmeans_faiss": {"kmeans": {"backend": "faiss", "n_init": 2}},
    "kmeans_spherical": {"kmeans": {"backend": "faiss", "n_init": 2, "spherical": True}},
    "gmm": {"method": "gmm", "gmm": {"covariance": "full"}},
    "spectral": {"method": "spectral", "spectral": {"num_neighbors": 5}},
    "spectral_qr_lobpcg": {"method": "spectral",
                           "spectral": {"num_neighbors": 5, "assign_labels": "cluster_qr", "eigen_solver": "lobpcg"}},
    "spectral_discretize": {"method": "spectral", "spectral": {"num_neighbors": 5, "assign_labels": "discretize"}},
    "agglomerative": {"method": "agglomerative", "agglomerative": {"num_neighbors": 5}},
    "agglomerative_average": {"method": "agglomerative", "agglomerative": {"linkage": "average", "num_neighbors": 5}},
    "pic": {"method": "pic", "pic": {"num_neighbors": 10}},  # DeepCluster's 5 split 30-point blobs in two
    "kmeans_on_umap": {"umap_dim": 2, "umap": {"num_neighbors": 10, "epochs": 100}},
}


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_method_recovers_blobs_and_assigns_new_points(tmp_path, name):
    from imageclust.metrics import ari

    x, labels, splits = write_blobs(tmp_path / "features", n_per=30)
    stats = run_clustering(tmp_path / "features", tmp_path / "cluster", *params(**ALL_METHODS[name]))
    a = read_assignments(tmp_path / "cluster" / ASSIGNMENTS_FILE)
    assert ari(labels, a.clusters) > 0.95  # test samples, assigned by the method's rule, too
    assert ((a.confidence > 0) & (a.confidence <= 1)).all()
    assert stats["assign_rule"] in ("centroid", "gmm", "knn") and stats["seconds"] >= 0

    transform, model = load_cluster_model(tmp_path / "cluster")  # what predict will use on new images
    assert model.rule == stats["assign_rule"] and model.centroids.shape == (3, stats["dim"])
    clusters, _ = model.predict(transform.apply(x))
    test = splits == "test"
    np.testing.assert_array_equal(clusters[test], a.clusters[test])
    rng = np.random.default_rng(1)
    fresh = np.eye(5, dtype=np.float32)[[0, 1, 2, 0]] * 5 + rng.normal(scale=0.2, size=(4, 5)).astype(np.float32)
    assigned, _ = model.predict(transform.apply(fresh))
    assert assigned[0] == assigned[3] and len(set(assigned[:3].tolist())) == 3


def test_faiss_and_sklearn_kmeans_agree_on_easy_data():
    from imageclust.metrics import ari

    x, labels = blobs(n_per=50)
    sk = fit_kmeans(x, ClusterParams(k=3), 0).predict(x)[0]
    fa = fit_kmeans(x, ClusterParams(k=3, kmeans={"backend": "faiss"}), 0)
    assert ari(sk, fa.predict(x)[0]) == 1.0 and ari(labels, sk) == 1.0
    assert fa.centroids.dtype == np.float32 and fa.stats["objective"] > 0


def test_spherical_kmeans_centres_are_unit_vectors():
    x, _ = blobs(n_per=30)
    model = fit_kmeans(l2_normalize(x), ClusterParams(k=3, kmeans={"backend": "faiss", "spherical": True}), 0)
    np.testing.assert_allclose(np.linalg.norm(model.centroids, axis=1), 1.0, rtol=1e-5)


def test_knn_graph_is_sparse_symmetric_without_self_loops():
    from imageclust.clustering.graph import knn_graph

    x, _ = blobs(n_per=20)
    graph = knn_graph(x, 4)
    assert graph.shape == (60, 60) and graph.nnz <= 60 * 4 * 2
    assert (graph != graph.T).nnz == 0 and graph.diagonal().sum() == 0
    assert (np.asarray(graph.sum(1)).ravel() >= 4).all()  # each point keeps its own 4 neighbours


def test_nearest_neighbors_leave_each_point_out_even_with_duplicates():
    from imageclust.clustering.graph import nearest_neighbors

    x = np.array([[0.0], [0.0], [1.0], [3.0]], dtype=np.float32)  # points 0 and 1 coincide
    neighbors, sq = nearest_neighbors(x, 2)
    assert all(i not in row for i, row in enumerate(neighbors.tolist()))
    assert neighbors[0].tolist() == [1, 2] and neighbors[1].tolist() == [0, 2] and neighbors[3][0] == 2
    np.testing.assert_allclose(sq[0], [0.0, 1.0])
    np.testing.assert_allclose(sq[2], [1.0, 1.0])


@pytest.mark.parametrize("solver", ["arpack", "lobpcg"])
def test_iterative_laplacian_eigensolvers_match_the_dense_one(solver):
    import scipy.sparse as sp
    from scipy.sparse.csgraph import laplacian

    from imageclust.clustering.graph import knn_graph, laplacian_eigenpairs

    x, _ = blobs(n_per=400)  # above the size where the dense solver is used
    graph = knn_graph(x, 6)
    values, vectors, sqrt_degree = laplacian_eigenpairs(graph, 5, 0, solver)
    lap = laplacian(graph.astype(np.float64), normed=True)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(lap.toarray())[:5], atol=1e-4)
    np.testing.assert_allclose(values[:3], 0.0, atol=1e-4)  # three blobs: three components
    residual = lap @ vectors - vectors * values
    assert np.abs(residual).max() < 1e-3 and sp.issparse(lap)


def test_pic_climbs_to_the_maximum_of_the_walk_by_hand():
    from imageclust.clustering.pic import climb_to_maxima, gaussian_knn_graph, merge_singletons, power_iteration

    # a path 0 - 1 - 2 - 3 - 4 - 5, all links 1 but a weak 2 - 3: two hills peaking at 1 and 4
    import scipy.sparse as sp

    edges = {(0, 1): 1.0, (1, 2): 1.0, (2, 3): 0.01, (3, 4): 1.0, (4, 5): 1.0}
    rows, cols, vals = zip(*[(i, j, w) for (i, j), w in edges.items()] + [(j, i, w) for (i, j), w in edges.items()])
    graph = sp.csr_matrix((vals, (rows, cols)), shape=(6, 6))
    v = power_iteration(graph, alpha=0.5, iterations=50)
    np.testing.assert_allclose(v.sum(), 1.0)
    # the fixed point of v = a W v + (1 - a)/n: v is largest where the weighted degree is
    assert v[1] > max(v[0], v[2]) and v[4] > max(v[3], v[5])
    labels = climb_to_maxima(graph, v)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    # a kernel of distances: exp(-d^2 / sigma^2), symmetrised by summing
    w = gaussian_knn_graph(np.array([[1], [0]]), np.array([[0.04], [0.04]]), sigma=0.2)
    np.testing.assert_allclose(w.toarray(), [[0, 2 * np.exp(-1)], [2 * np.exp(-1), 0]])
    # a singleton joins its nearest neighbour that is not alone
    merged, count = merge_singletons(np.array([0, 0, 1, 2, 2]), np.array([[1], [0], [3], [4], [3]]))
    assert merged.tolist() == [0, 0, 1, 1, 1] and count == 1


def test_gmm_reports_bic_and_round_trips(tmp_path):
    x, labels = blobs(n_per=30)
    model = METHODS["gmm"](x, ClusterParams(k=3, method="gmm"), 0)
    assert np.isfinite(model.stats["bic"]) and model.stats["converged"]
    back = Clustering.from_arrays(dict(np.load(_saved(tmp_path, model))))
    np.testing.assert_array_equal(back.predict(x)[0], model.predict(x)[0])
    assert clustering_accuracy(labels, back.predict(x)[0]) == 1.0


def _saved(tmp_path, model):
    np.savez(tmp_path / "m.npz", **model.to_arrays())
    return tmp_path / "m.npz"


def test_method_params_are_checked():
    with pytest.raises(ValueError, match="spherical k-means needs backend faiss"):
        ClusterParams(kmeans={"spherical": True})
    with pytest.raises(ValueError, match="needs cluster.l2_normalize=true"):
        ClusterParams(l2_normalize=False, kmeans={"spherical": True, "backend": "faiss"})
    with pytest.raises(ValueError):
        ClusterParams(gmm={"covariance": "dense"})


# ---------------------------------------------------------------- K chosen without labels


def four_blobs(n_per=40, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(6)[:4] * 6.0
    labels = np.repeat(np.arange(4), n_per)
    return (centres[labels] + rng.normal(scale=0.4, size=(len(labels), 6))).astype(np.float32), labels


@pytest.mark.parametrize("method, chosen, criterion", [
    ("kmeans", "auto", "silhouette"), ("gmm", "auto", "bic"), ("spectral", "auto", "eigengap"),
    ("agglomerative", "auto", "silhouette"), ("kmeans", "eigengap", "eigengap"), ("gmm", "silhouette", "silhouette")])
def test_auto_k_finds_the_number_of_blobs(method, chosen, criterion):
    from imageclust.clustering.choose_k import choose_k

    x, _ = four_blobs()
    p = ClusterParams(method=method, k="auto", auto_k={"min_k": 2, "max_k": 8, "criterion": chosen, "num_neighbors": 8},
                      kmeans={"n_init": 3})
    k, curve, name = choose_k(x, p, METHODS[method], 0)
    assert (k, name) == (4, criterion)
    assert sorted(curve) == list(range(2, 9))


def test_auto_k_through_the_stage_records_the_curve_and_finetune_follows(tmp_path):
    from imageclust.plots import plot_k_curve

    x, labels = four_blobs(n_per=30)
    n = len(labels)
    write_features(tmp_path / "f", FeatureTable(ids=np.array([f"s{i}" for i in range(n)], dtype=object),
                                                splits=np.array(["train"] * n, dtype=object), labels=labels,
                                                vectors=x), {})
    g, d, c = params(k="auto", auto_k={"min_k": 2, "max_k": 6})
    stats = run_clustering(tmp_path / "f", tmp_path / "c", g, d, c)
    assert stats["k"] == 4 and stats["k_auto"] and stats["k_criterion"] == "silhouette"
    assert set(stats["k_curve"]) == {"2", "3", "4", "5", "6"}
    assert read_assignments(tmp_path / "c" / ASSIGNMENTS_FILE).num_clusters == 4
    rows = (tmp_path / "c" / "k_curve.csv").read_text().splitlines()
    assert rows[0] == "k,score,criterion,chosen" and rows[3].startswith("4,") and rows[3].endswith(",1")
    plot_k_curve(tmp_path / "c" / "k_curve.csv", tmp_path / "k.png")
    assert (tmp_path / "k.png").stat().st_size > 1000


def test_bic_is_only_for_a_mixture():
    with pytest.raises(ValueError, match="cluster.auto_k.criterion=bic needs cluster.method=gmm"):
        ClusterParams(method="kmeans", k="auto", auto_k={"criterion": "bic"})
    assert ClusterParams(method="gmm", auto_k={"criterion": "bic"}).auto_k.criterion == "bic"


def test_k_auto_or_an_integer():
    assert ClusterParams(k="auto").k == "auto"
    for bad in ("many", 1, True, 2.5):
        with pytest.raises(ValueError):
            ClusterParams(k=bad)
    with pytest.raises(ValueError, match="below min_k"):
        ClusterParams(auto_k={"min_k": 5, "max_k": 3})


def test_hdbscan_finds_the_blobs_leaves_outliers_as_noise_and_evaluate_counts_them(tmp_path):
    from imageclust.evaluate import evaluate_sources
    from imageclust.plots import embed_2d, plot_cluster_sizes, plot_confusion, plot_embedding

    x, labels = four_blobs(n_per=40)
    outliers = np.random.default_rng(3).uniform(-20, 20, size=(6, 6)).astype(np.float32)
    x, labels = np.concatenate([x, outliers]), np.concatenate([labels, np.zeros(6, dtype=np.int64)])
    n = len(labels)
    ids = np.array([f"s{i}" for i in range(n)], dtype=object)
    write_features(tmp_path / "f", FeatureTable(ids=ids, splits=np.array(["train"] * n, dtype=object),
                                                labels=labels, vectors=x), {})
    g, d, c = params(method="hdbscan", k=10, l2_normalize=False, hdbscan={"min_cluster_size": 10})
    stats = run_clustering(tmp_path / "f", tmp_path / "c", g, d, c)
    assert stats["k"] == 4 and stats["clusters_found"] == 4  # k=10 was not used: HDBSCAN finds its own
    a = read_assignments(tmp_path / "c" / ASSIGNMENTS_FILE)
    assert (a.clusters[-6:] == -1).all() and (a.clusters[:-6] >= 0).all() and a.num_clusters == 4

    scores = evaluate_sources(read_features(tmp_path / "f"), {"hdbscan": a}, 1000, 0)["hdbscan"]["all"]
    assert scores["noise"] == 6 and scores["acc"] == pytest.approx(160 / 166)
    assert scores["clusters_empty"] == 0

    transform, model = load_cluster_model(tmp_path / "c")
    far = np.full((1, 6), 100.0, dtype=np.float32)
    assert model.predict(transform.apply(np.concatenate([x[:1], far])))[0].tolist()[0] == a.clusters[0]

    names = ["a", "b", "c", "d"]
    plot_confusion(a.labels, a.clusters, names, tmp_path / "confusion.png", "t")
    plot_cluster_sizes({"hdbscan": a.clusters}, tmp_path / "sizes.png", 4)
    rows, coords = embed_2d(x, "pca", 1000, 0)
    plot_embedding(coords, a.clusters[rows], a.labels[rows], names, tmp_path / "embedding.png", "pca")
    for png in ("confusion.png", "sizes.png", "embedding.png"):
        assert (tmp_path / png).stat().st_size > 1000
