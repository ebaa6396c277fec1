import json

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from imageclust.metrics import (
    ari,
    cluster_statistics,
    clustering_accuracy,
    contingency,
    hungarian_match,
    label_free_scores,
    nmi,
    purity,
)


def test_contingency_counts_classes_by_clusters():
    table = contingency([0, 0, 1, 2], [1, 1, 0, 1])
    assert table.tolist() == [[0, 2], [1, 0], [0, 1]]
    assert contingency([0, 0, 1, 2], [1, 1, 0, 1], num_clusters=3).tolist() == [[0, 2, 0], [1, 0, 0], [0, 1, 0]]


def test_contingency_rejects_negative_ids():
    with pytest.raises(ValueError):
        contingency([0, -1], [0, 1])


def test_perfect_clustering_with_permuted_noncontiguous_ids():
    labels = [0, 0, 1, 1, 2, 2]
    clusters = [5, 5, 9, 9, -3, -3]
    assert hungarian_match(labels, clusters) == {5: 0, 9: 1, -3: 2}
    for metric in (clustering_accuracy, purity, nmi, ari):
        assert metric(labels, clusters) == pytest.approx(1.0)


def test_accuracy_hand_computed_differs_from_purity():
    # Cluster 0 = three of class 0; cluster 1 = two of class 0 and the one class-1 sample.
    # One-to-one: 0->0 (3 right) and 1->1 (1 right) = 4/6; many-to-one: both clusters -> class 0 = 5/6.
    labels = [0, 0, 0, 0, 0, 1]
    clusters = [0, 0, 0, 1, 1, 1]
    assert hungarian_match(labels, clusters) == {0: 0, 1: 1}
    assert clustering_accuracy(labels, clusters) == pytest.approx(4 / 6)
    assert purity(labels, clusters) == pytest.approx(5 / 6)


def test_three_class_case():
    # Classes 0,1,2 over clusters 0,1,2: best matching is the identity with 2+1+1 = 4 right.
    labels = [0, 0, 1, 1, 2, 2]
    clusters = [0, 0, 0, 1, 1, 2]
    assert hungarian_match(labels, clusters) == {0: 0, 1: 1, 2: 2}
    assert clustering_accuracy(labels, clusters) == pytest.approx(4 / 6)


def test_more_clusters_than_classes_leaves_clusters_unmatched():
    labels, clusters = [0, 0, 1, 1], [0, 1, 2, 3]
    assert clustering_accuracy(labels, clusters) == pytest.approx(0.5)
    assert purity(labels, clusters) == pytest.approx(1.0)
    mapping = hungarian_match(labels, clusters)
    assert len(mapping) == 2 and sorted(mapping.values()) == [0, 1]
    assert mapping.keys() <= {0, 1, 2, 3}
    assert all(labels[clusters.index(k)] == c for k, c in mapping.items())


def test_fewer_clusters_than_classes():
    labels = [0, 0, 1, 1, 2, 2]
    clusters = [0, 0, 0, 0, 1, 1]
    mapping = hungarian_match(labels, clusters)
    assert mapping[1] == 2 and mapping[0] in (0, 1) and len(mapping) == 2
    assert clustering_accuracy(labels, clusters) == pytest.approx(4 / 6)
    assert purity(labels, clusters) == pytest.approx(4 / 6)


def test_scores_invariant_to_renaming_clusters_and_reordering_samples():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=200)
    clusters = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 6, size=200))
    renamed = rng.permutation(1000)[:6][clusters] - 500  # arbitrary, possibly negative ids
    order = rng.permutation(200)
    for metric in (clustering_accuracy, purity, nmi, ari):
        expected = metric(labels, clusters)
        assert metric(labels, renamed) == pytest.approx(expected)
        assert metric(labels[order], renamed[order]) == pytest.approx(expected)
    assert 0.5 < clustering_accuracy(labels, clusters) < 1.0


def test_nmi_ari_lower_for_worse_clustering():
    labels = np.repeat([0, 1, 2], 20)
    mixed = np.tile([0, 1, 2], 20)
    assert nmi(labels, mixed) < 0.1 and ari(labels, mixed) < 0.1


def test_metrics_return_plain_floats():
    labels, clusters = np.array([0, 1, 1]), np.array([1, 0, 0])
    for metric in (clustering_accuracy, purity, nmi, ari):
        assert type(metric(labels, clusters)) is float
    assert all(type(k) is int and type(v) is int for k, v in hungarian_match(labels, clusters).items())


@pytest.mark.parametrize("labels, clusters", [([0, 1], [0]), ([], []), ([0.5], [0])])
def test_bad_inputs_raise(labels, clusters):
    with pytest.raises(ValueError):
        clustering_accuracy(labels, clusters)


def _two_blobs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    clusters = np.repeat([0, 1], n // 2)
    directions = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    vectors = directions[clusters] + 0.05 * rng.normal(size=(n, 3))
    return vectors.astype(np.float32), clusters


def test_label_free_scores_on_separated_clusters():
    vectors, clusters = _two_blobs()
    scores = label_free_scores(vectors, clusters, max_samples=1000, seed=0)
    assert set(scores) == {"silhouette", "davies_bouldin", "calinski_harabasz"}
    assert scores["silhouette"] > 0.8 and scores["davies_bouldin"] < 0.5
    assert all(type(v) is float for v in scores.values())
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert scores["silhouette"] == pytest.approx(silhouette_score(unit, clusters, metric="cosine"), rel=1e-5)


def test_label_free_scores_use_normalised_vectors():
    vectors, clusters = _two_blobs()
    scaled = vectors * np.random.default_rng(1).uniform(0.1, 10, size=(len(vectors), 1)).astype(np.float32)
    plain = label_free_scores(vectors, clusters, 1000, 0)
    assert label_free_scores(scaled, clusters, 1000, 0) == pytest.approx(plain, rel=1e-4)


def test_silhouette_subsample_is_seeded():
    vectors, clusters = _two_blobs(n=200)
    first = label_free_scores(vectors, clusters, max_samples=20, seed=3)
    assert first == label_free_scores(vectors, clusters, max_samples=20, seed=3)
    full = label_free_scores(vectors, clusters, max_samples=200, seed=3)
    assert first["silhouette"] != full["silhouette"]
    assert first["calinski_harabasz"] == full["calinski_harabasz"]  # not subsampled


def test_label_free_scores_absent_when_undefined():
    vectors, clusters = _two_blobs(n=6)
    assert label_free_scores(vectors, np.zeros(6, dtype=int), 100, 0) == {}
    assert label_free_scores(vectors, np.arange(6), 100, 0) == {}


def test_cluster_statistics_with_and_without_k():
    clusters = [0, 0, 0, 2]
    assert cluster_statistics(clusters) == {
        "clusters_nonempty": 2,
        "cluster_size_min": 1,
        "cluster_size_max": 3,
        "cluster_size_cv": pytest.approx(0.5),
    }
    stats = cluster_statistics(clusters, k=4)
    assert stats == {
        "clusters_nonempty": 2,
        "clusters_empty": 2,
        "cluster_size_min": 0,
        "cluster_size_max": 3,
        "cluster_size_cv": pytest.approx(np.std([3, 0, 1, 0]) / 1.0),
    }
    json.dumps(stats)
    assert cluster_statistics([1, 1, 0, 0], k=2)["cluster_size_cv"] == 0.0
    with pytest.raises(ValueError):
        cluster_statistics(clusters, k=2)


def test_noise_is_never_matched_and_counts_as_wrong():
    from imageclust.metrics import NOISE, cluster_statistics, hungarian_match, label_free_scores

    labels = np.array([0, 0, 0, 1, 1, 1])
    clusters = np.array([5, 5, NOISE, 7, 7, NOISE])
    assert hungarian_match(labels, clusters) == {5: 0, 7: 1}
    assert clustering_accuracy(labels, clusters) == pytest.approx(4 / 6)  # the 2 noise points are wrong
    assert purity(labels, clusters) == pytest.approx(4 / 6)
    assert clustering_accuracy(labels, np.full(6, NOISE)) == 0.0
    stats = cluster_statistics(clusters)
    assert stats["noise"] == 2 and stats["noise_fraction"] == pytest.approx(2 / 6)
    assert stats["clusters_nonempty"] == 2 and stats["cluster_size_min"] == 2
    vectors = np.array([[1, 0], [1, 0.1], [9, 9], [0, 1], [0.1, 1], [-9, 3]], dtype=np.float32)
    with_noise = label_free_scores(vectors, clusters, 100, 0)
    assert with_noise == label_free_scores(vectors[clusters != NOISE], clusters[clusters != NOISE], 100, 0)
