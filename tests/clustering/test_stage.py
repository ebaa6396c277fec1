"""The cluster stage on written features: every method fitted on the training splits, every sample
assigned, the model saved for new points."""

import numpy as np
import pytest
from fakes import four_blobs, write_blobs

from imageclust.clustering.params import ClusterParams
from imageclust.clustering.stage import ASSIGNMENTS_FILE, MODEL_FILE, load_cluster_model, run_clustering
from imageclust.errors import ParamsError
from imageclust.metrics import clustering_accuracy
from imageclust.tables import UNLABELED, FeatureTable, read_assignments, read_features, write_features

# ---------------------------------------------------------------- the cluster stage


def params(**cluster):
    cluster = {"k": 3, "kmeans": {"n_init": 3}, **cluster}
    return 0, ["train"], ClusterParams(**cluster)


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
    write_features(
        tmp_path / "f",
        FeatureTable(
            np.array([f"s{i}" for i in range(n)], dtype=object),
            np.full(n, "train", dtype=object),
            np.zeros(n, dtype=np.int64),
            rng.uniform(size=(n, 4)).astype(np.float32),
        ),
        {},
    )
    g, d, c = params(k=5, kmeans={"n_init": 1}, l2_normalize=False)
    run_clustering(tmp_path / "f", tmp_path / "a", 0, d, c)
    run_clustering(tmp_path / "f", tmp_path / "b", 1, d, c)
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
        run_clustering(tmp_path / "f", tmp_path / "out", 0, ["unlabeled"], ClusterParams(k=3))
    message = str(info.value)
    assert "\n" not in message and message.startswith("params:")
    assert "data.train_splits" in message and "unlabeled" in message
    assert "test" in message and "train" in message  # the splits that exist
    assert not (tmp_path / "out").exists()


def test_several_train_splits(tmp_path):
    write_blobs(tmp_path / "f")
    stats = run_clustering(
        tmp_path / "f", tmp_path / "out", 0, ["train", "test"], ClusterParams(k=3, kmeans={"n_init": 2})
    )
    assert stats["fit_samples"] == 60


# ---------------------------------------------------------------- more methods, each with its rule for new points

ALL_METHODS = {
    "kmeans": {},
    "kmeans_faiss": {"kmeans": {"backend": "faiss", "n_init": 2}},
    "kmeans_spherical": {"kmeans": {"backend": "faiss", "n_init": 2, "spherical": True}},
    "gmm": {"method": "gmm", "gmm": {"covariance": "full"}},
    "spectral": {"method": "spectral", "spectral": {"num_neighbors": 5}},
    "spectral_qr_lobpcg": {
        "method": "spectral",
        "spectral": {"num_neighbors": 5, "assign_labels": "cluster_qr", "eigen_solver": "lobpcg"},
    },
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


def test_hdbscan_finds_the_blobs_leaves_outliers_as_noise_and_evaluate_counts_them(tmp_path):
    from imageclust.evaluate import evaluate_sources
    from imageclust.plots.confusion import plot_confusion
    from imageclust.plots.embedding import embed_2d, plot_embedding
    from imageclust.plots.sizes import plot_cluster_sizes

    x, labels = four_blobs(n_per=40)
    outliers = np.random.default_rng(3).uniform(-20, 20, size=(6, 6)).astype(np.float32)
    x, labels = np.concatenate([x, outliers]), np.concatenate([labels, np.zeros(6, dtype=np.int64)])
    n = len(labels)
    ids = np.array([f"s{i}" for i in range(n)], dtype=object)
    write_features(
        tmp_path / "f",
        FeatureTable(ids=ids, splits=np.array(["train"] * n, dtype=object), labels=labels, vectors=x),
        {},
    )
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
