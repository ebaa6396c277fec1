"""Agglomerative clustering (Ward, average, complete or single linkage; scikit-learn's) constrained to
the kNN graph, which keeps memory linear in the samples. New points: the vote of their nearest
fitted points."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..config import Int, Section
from .base import Clustering, ClusterMethod
from .graph import knn_graph, knn_vote_clustering


class Params(Section):
    linkage: Literal["ward", "average", "complete", "single"] = Field(
        "ward", description="how two clusters' distance is measured"
    )
    num_neighbors: Int = Field(
        10,
        ge=1,
        description="kNN connectivity graph, which keeps memory linear in the "
        "samples; also the vote that assigns new points",
    )


def fit_agglomerative(x: np.ndarray, k: int, params: Params, seed: int) -> Clustering:
    from sklearn.cluster import AgglomerativeClustering

    graph = knn_graph(x, params.num_neighbors)
    model = AgglomerativeClustering(n_clusters=k, linkage=params.linkage, connectivity=graph).fit(x)
    return knn_vote_clustering(x, model.labels_, k, params.num_neighbors, {"graph_edges": int(graph.nnz // 2)})


METHOD = ClusterMethod("agglomerative", fit_agglomerative, Params)
