"""k-means (Lloyd with k-means++ seeding, scikit-learn), with DEC's soft assignment as confidence."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from .base import Clustering


def student_t_assignment(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Soft assignment q_ij ∝ (1 + ||x_i - mu_j||^2)^-1 (Xie et al. 2016, DEC, eq. 1 with alpha=1)."""
    d2 = (x**2).sum(1)[:, None] + (centroids**2).sum(1)[None, :] - 2.0 * x @ centroids.T
    d2 = np.maximum(d2, 0.0)  # rounding can push tiny distances below zero
    q = 1.0 / (1.0 + d2)
    return q / q.sum(1, keepdims=True)


def fit_kmeans(x: np.ndarray, params, seed: int) -> Clustering:
    model = KMeans(n_clusters=params.k, n_init=params.n_init, max_iter=params.max_iter, random_state=seed)
    model.fit(x)
    return Clustering(
        centroids=model.cluster_centers_.astype(np.float32),
        stats={"inertia": float(model.inertia_), "iterations": int(model.n_iter_)},
    )
