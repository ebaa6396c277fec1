"""Clustering quality metrics: label-based (ACC, NMI, ARI, purity), label-free and cluster sizes.

Noise: a method that may leave points unclustered (HDBSCAN) gives them the cluster id ``NOISE``
(-1). ACC and purity never match noise to a class, so noise points count as wrong; NMI and ARI see
the noise as one more cluster; label-free scores and cluster sizes leave noise points out.

Every function takes 1-D integer arrays (one entry per sample) and returns plain Python numbers,
so results go straight into JSON. Class and cluster ids may be any integers, not necessarily
contiguous or starting at 0, except in ``contingency`` (which indexes a table with them) and
``cluster_statistics`` with ``k``.
"""

from __future__ import annotations

import numpy as np

# SciPy and scikit-learn are imported where used: check_params imports this module through the
# schema, and runs before every experiment

NOISE = -1


def _as_ids(values, name: str) -> np.ndarray:
    ids = np.asarray(values)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {ids.dtype}")
    return ids.astype(np.int64, copy=False)


def _check_pair(labels, clusters) -> tuple[np.ndarray, np.ndarray]:
    labels, clusters = _as_ids(labels, "labels"), _as_ids(clusters, "clusters")
    if len(labels) != len(clusters):
        raise ValueError(f"labels and clusters differ in length: {len(labels)} vs {len(clusters)}")
    return labels, clusters


def contingency(labels, clusters, num_classes: int | None = None, num_clusters: int | None = None) -> np.ndarray:
    """Table of counts, ``table[c, k]`` = number of samples of class ``c`` put in cluster ``k``.

    Ids index the table directly, so they must be non-negative; the sizes default to the largest
    id + 1 and can be given to keep rows or columns for classes or clusters without samples.
    """
    labels, clusters = _check_pair(labels, clusters)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    num_clusters = int(clusters.max()) + 1 if num_clusters is None else num_clusters
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"class ids must lie in [0, {num_classes})")
    if clusters.min() < 0 or clusters.max() >= num_clusters:
        raise ValueError(f"cluster ids must lie in [0, {num_clusters})")
    counts = np.bincount(labels * num_clusters + clusters, minlength=num_classes * num_clusters)
    return counts.reshape(num_classes, num_clusters)


def _dense_contingency(labels, clusters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contingency over the ids that occur, whatever their values, with those class and cluster ids."""
    labels, clusters = _check_pair(labels, clusters)
    classes, class_index = np.unique(labels, return_inverse=True)
    cluster_ids, cluster_index = np.unique(clusters, return_inverse=True)
    return contingency(class_index, cluster_index, len(classes), len(cluster_ids)), classes, cluster_ids


def _clustered_contingency(labels, clusters):
    """``_dense_contingency`` of the points not in noise, and how many points there were in all;
    None when every point is noise (nothing to match)."""
    labels, clusters = _check_pair(labels, clusters)
    clustered = clusters != NOISE
    if not clustered.any():
        return None
    return (*_dense_contingency(labels[clustered], clusters[clustered]), len(labels))


def hungarian_match(labels, clusters) -> dict[int, int]:
    """One-to-one map cluster -> class that maximises the number of samples whose cluster maps to their class.

    Solved as an assignment problem (Kuhn 1955) on the classes x clusters contingency table, as
    for the unsupervised clustering accuracy of Xie et al. 2016 (DEC). The table may be rectangular:
    with more clusters than classes the unmatched clusters are absent from the result; with fewer,
    some classes receive no cluster.
    """
    found = _clustered_contingency(labels, clusters)
    if found is None:
        return {}
    table, classes, cluster_ids, _ = found
    from scipy.optimize import linear_sum_assignment

    class_rows, cluster_cols = linear_sum_assignment(table, maximize=True)
    return {int(cluster_ids[k]): int(classes[c]) for c, k in zip(class_rows, cluster_cols)}


def clustering_accuracy(labels, clusters) -> float:
    """Unsupervised clustering accuracy (ACC, Xie et al. 2016): accuracy under ``hungarian_match``.

    Samples in clusters left unmatched count as wrong, so with more clusters than classes ACC can
    stay below 1 even when every cluster is pure (``purity`` is the many-to-one counterpart).
    Invariant to renaming clusters, since the best matching is searched over all of them.
    """
    found = _clustered_contingency(labels, clusters)  # noise is never matched: it counts as wrong
    if found is None:
        return 0.0
    table, _, _, n = found
    from scipy.optimize import linear_sum_assignment

    class_rows, cluster_cols = linear_sum_assignment(table, maximize=True)
    return float(table[class_rows, cluster_cols].sum() / n)


def purity(labels, clusters) -> float:
    """Fraction of samples that belong to the majority class of their cluster (many-to-one matching)."""
    found = _clustered_contingency(labels, clusters)  # noise has no majority class: it counts as wrong
    if found is None:
        return 0.0
    table, _, _, n = found
    return float(table.max(axis=0).sum() / n)


def nmi(labels, clusters) -> float:
    """Normalised mutual information, arithmetic-mean normalisation (sklearn's default)."""
    labels, clusters = _check_pair(labels, clusters)
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(labels, clusters, average_method="arithmetic"))


def ari(labels, clusters) -> float:
    """Adjusted Rand index: 1 for identical partitions, about 0 for a random one."""
    labels, clusters = _check_pair(labels, clusters)
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(labels, clusters))


def _label_free_defined(clusters: np.ndarray) -> bool:
    # sklearn's label-free scores need 2 <= number of clusters <= number of samples - 1.
    return 2 <= len(np.unique(clusters)) < len(clusters)


def label_free_scores(vectors, clusters, max_samples: int, seed: int) -> dict[str, float]:
    """Scores that need no labels, on L2-normalised vectors: ``silhouette`` (cosine),
    ``davies_bouldin`` (lower is better) and ``calinski_harabasz`` (higher is better).

    Silhouette is quadratic in the number of samples, so it is computed on a random subsample of at
    most ``max_samples`` rows drawn with ``seed``; the other two are linear and use every row.
    A score is left out (not set to 0 or NaN) when it is undefined: fewer than 2 clusters, or as
    many clusters as samples (in the whole set, or in the silhouette subsample).
    """
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    clusters = _as_ids(clusters, "clusters")
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(clusters):
        raise ValueError(f"vectors must have shape ({len(clusters)}, d), got {vectors.shape}")
    clustered = clusters != NOISE
    vectors, clusters = vectors[clustered], clusters[clustered]
    if not _label_free_defined(clusters):
        return {}
    # Features are compared by direction elsewhere in the pipeline, so score them the same way.
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    scores = {
        "davies_bouldin": float(davies_bouldin_score(unit, clusters)),
        "calinski_harabasz": float(calinski_harabasz_score(unit, clusters)),
    }
    sample = np.arange(len(clusters))
    if len(sample) > max_samples:
        sample = np.sort(np.random.default_rng(seed).choice(len(sample), size=max_samples, replace=False))
    if _label_free_defined(clusters[sample]):
        scores["silhouette"] = float(silhouette_score(unit[sample], clusters[sample], metric="cosine"))
    return scores


def cluster_statistics(clusters, k: int | None = None) -> dict[str, int | float]:
    """Cluster sizes, to spot degenerate solutions (one giant cluster, clusters left empty).

    Without ``k`` only the clusters that occur are known: ``cluster_size_min``, ``_max`` and ``_cv``
    are over non-empty clusters. With ``k`` (ids must lie in [0, k)) they are over all k clusters,
    empty ones counting as size 0, and ``clusters_empty`` is added, so a collapse shows as a min of 0
    and a larger cv. ``cluster_size_cv`` is the population standard deviation of the sizes divided
    by their mean: 0 when perfectly balanced.
    """
    clusters = _as_ids(clusters, "clusters")
    noise = int((clusters == NOISE).sum())
    clusters = clusters[clusters != NOISE]
    if not len(clusters):
        return {"clusters_nonempty": 0, "noise": noise, "noise_fraction": 1.0}
    if k is None:
        sizes = np.unique(clusters, return_counts=True)[1]
    else:
        if clusters.min() < 0 or clusters.max() >= k:
            raise ValueError(f"cluster ids must lie in [0, {k})")
        sizes = np.bincount(clusters, minlength=k)
    stats = {
        "clusters_nonempty": int(np.count_nonzero(sizes)),
        "cluster_size_min": int(sizes.min()),
        "cluster_size_max": int(sizes.max()),
        "cluster_size_cv": float(sizes.std() / sizes.mean()),
    }
    if k is not None:
        stats["clusters_empty"] = int(k - stats["clusters_nonempty"])
    if noise:
        stats.update(noise=noise, noise_fraction=noise / (noise + len(clusters)))
    return stats
