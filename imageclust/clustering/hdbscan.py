"""HDBSCAN (Campello, Moulavi & Sander 2013; scikit-learn's): clusters of varying density, their
number found by the method (``cluster.k`` is not used), and points in no dense region left as
noise (-1). New points take the vote of their nearest fitted points, noise included."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..config import Int, Section
from .base import Clustering, ClusterMethod
from .graph import knn_vote_clustering


class Params(Section):
    min_cluster_size: Int = Field(15, ge=2, description="the smallest group HDBSCAN calls a cluster")
    min_samples: Int | None = Field(
        None, ge=1, description="density estimate's neighbourhood; null: `min_cluster_size`"
    )
    cluster_selection_epsilon: float = Field(0.0, ge=0, description="merge clusters closer than this")
    num_neighbors: Int = Field(10, ge=1, description="the vote that assigns new points")


def fit_hdbscan(x: np.ndarray, k: int, params: Params, seed: int) -> Clustering:
    from sklearn.cluster import HDBSCAN

    p = params
    labels = (
        HDBSCAN(
            min_cluster_size=p.min_cluster_size,
            min_samples=p.min_samples,
            cluster_selection_epsilon=p.cluster_selection_epsilon,
            copy=True,
        )
        .fit(x)
        .labels_
    )
    found = max(int(labels.max()) + 1, 1)
    noise = int((labels == -1).sum())
    return knn_vote_clustering(
        x,
        labels,
        found,
        p.num_neighbors,
        {"clusters_found": int(labels.max()) + 1, "noise": noise, "noise_fraction": noise / len(labels)},
    )


METHOD = ClusterMethod("hdbscan", fit_hdbscan, Params, finds_k=True)
