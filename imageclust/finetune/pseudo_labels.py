"""DeepCluster's pseudo-labels (Caron et al. 2018): the space the features are clustered in (PCA
whitening, then L2, as its ``preprocess_features``), k-means with its rule for empty clusters, the
number of pseudo-classes, and the sampler that draws images evenly over them."""

from __future__ import annotations

import numpy as np
import torch

from ..clustering import kmeans
from ..clustering.base import Clustering


def uniform_cluster_sampler(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` indices drawn evenly over the non-empty clusters of ``labels`` (DeepCluster's
    ``UnifLabelSampler``): each cluster gives ``size // clusters + 1`` indices (with replacement only
    when it holds fewer), the lot is shuffled and cut to ``size``."""
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    per_cluster = size // len(members) + 1
    drawn = np.concatenate([rng.choice(m, per_cluster, replace=len(m) < per_cluster) for m in members])
    rng.shuffle(drawn)
    return drawn[:size]


def reseed_empty_clusters(
    x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, rng: np.random.Generator, scale: float = 1e-4
) -> tuple[np.ndarray, np.ndarray, int]:
    """DeepCluster's rule for an empty cluster (section 3.3): take a random non-empty cluster, give
    the empty one its centre plus a small perturbation, and split the non-empty cluster's points
    between the two centres by distance. Returns new labels, centroids and the number re-seeded."""
    labels, centroids = labels.copy(), centroids.copy()
    k, reseeded = len(centroids), 0
    for empty in range(k):
        if (labels == empty).any():
            continue
        sizes = np.bincount(labels, minlength=k)
        donor = int(rng.choice(np.flatnonzero(sizes > 1)))  # a cluster of one cannot be split
        noise = scale * rng.standard_normal(centroids.shape[1])
        centroids[empty], centroids[donor] = centroids[donor] + noise, centroids[donor] - noise
        points = np.flatnonzero(labels == donor)
        closer = ((x[points] - centroids[empty]) ** 2).sum(1) < ((x[points] - centroids[donor]) ** 2).sum(1)
        if not closer.any() or closer.all():  # identical points: split them in half
            closer = np.arange(len(points)) < len(points) // 2
        labels[points[closer]] = empty
        reseeded += 1
    return labels, centroids, reseeded


class ClusterSpace:
    """PCA whitening then L2 normalisation, fitted on the training features (as DeepCluster's
    ``preprocess_features``)."""

    def __init__(self, x: np.ndarray, dim: int | None, whiten: bool, seed: int):
        from sklearn.decomposition import PCA

        self.pca = None
        if dim is not None:
            self.pca = PCA(n_components=min(dim, *x.shape), whiten=whiten, random_state=seed).fit(x)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.pca is not None:
            x = self.pca.transform(x)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x.astype(np.float32)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """What applying the transform takes: (x - mean) @ components.T / scale, then L2."""
        if self.pca is None:
            return {}
        scale = np.sqrt(self.pca.explained_variance_) if self.pca.whiten else np.ones(self.pca.n_components_)
        return {
            name: torch.from_numpy(np.asarray(v, dtype=np.float32))
            for name, v in (
                ("pca_mean", self.pca.mean_),
                ("pca_components", self.pca.components_),
                ("pca_scale", scale),
            )
        }


def cluster_features(x: np.ndarray, k: int, p, seed: int) -> tuple[ClusterSpace, Clustering, np.ndarray, dict]:
    """One DeepCluster clustering of the training features ``x``: the space, the k-means model, the
    labels after re-seeding empty clusters, and statistics."""
    space = ClusterSpace(x, p.pca_dim, p.whiten, seed)
    z = space(x)
    params = kmeans.Params(backend=p.kmeans_backend, n_init=p.kmeans_n_init, max_iter=100)
    clustering = kmeans.fit_kmeans(z, k, params, seed)
    nearest = clustering.predict(z)[0].astype(np.int64)
    labels, clustering.centroids, reseeded = reseed_empty_clusters(
        z, nearest, clustering.centroids, np.random.default_rng(seed)
    )
    return space, clustering, labels, {"reseeded": reseeded, **clustering.stats}


def training_clusters(k: int, samples: int, requested: int | None = None) -> int:
    """The number of pseudo-classes DeepCluster trains on: ``requested``, or the paper's ten times
    the number of classes (10,000 k-means clusters for ImageNet's 1,000), kept to at least ten
    images per cluster on average and never below ``k``. Over-clustering gives finer pseudo-labels
    that a class can be split across without being merged with another."""
    if requested is not None:
        return requested
    return max(k, min(10 * k, samples // 10))
