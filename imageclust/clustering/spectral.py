"""Spectral clustering (Ng, Jordan & Weiss 2001; von Luxburg 2007) of the sparse kNN graph: the
normalised Laplacian's first K eigenvectors (Lanczos or LOBPCG, no shift-invert), then
``assign_labels`` turns them into K clusters. New points: the vote of their nearest fitted points.
Its ``cluster.k: auto`` criterion is the eigengap."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..config import Int, Section
from .base import Clustering, ClusterMethod
from .graph import knn_graph, knn_vote_clustering, laplacian_eigenpairs


class Params(Section):
    num_neighbors: Int = Field(
        10,
        ge=1,
        description="neighbours per point of the sparse affinity graph (never a "
        "dense n x n matrix), and of the vote that assigns new points",
    )
    assign_labels: Literal["kmeans", "cluster_qr", "discretize"] = Field(
        "kmeans",
        description="how the spectral embedding becomes clusters: `kmeans` is Ng, Jordan & Weiss (rows "
        "to unit length, then k-means), `cluster_qr` Damle et al. 2019, `discretize` Yu & Shi 2003",
    )
    eigen_solver: Literal["arpack", "lobpcg"] = Field(
        "arpack",
        description="both find the largest eigenvalues of 2I - L without shift-invert: seconds on 70,000 "
        "points (scikit-learn's shift-invert ARPACK took over 8 minutes there)",
    )


def spectral_embedding(graph: sp.csr_matrix, k: int, solver: str, seed: int) -> np.ndarray:
    """The first ``k`` eigenvectors of the normalised Laplacian, scaled by D^-1/2 (as scikit-learn's)."""
    _, vectors, sqrt_degree = laplacian_eigenpairs(graph, k, seed, solver)
    return vectors / sqrt_degree[:, None]


def assign_from_embedding(embedding: np.ndarray, k: int, how: str, seed: int) -> np.ndarray:
    """Clusters from the spectral embedding: ``kmeans`` (Ng, Jordan & Weiss: rows scaled to unit length,
    then k-means with 10 restarts), ``cluster_qr`` (Damle et al. 2019) or ``discretize`` (Yu & Shi 2003)."""
    if how == "kmeans":
        from sklearn.cluster import KMeans

        rows = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(rows)
    from sklearn.cluster._spectral import cluster_qr, discretize  # scikit-learn's own, as SpectralClustering uses

    return cluster_qr(embedding) if how == "cluster_qr" else discretize(embedding, random_state=seed)


def fit_spectral(x: np.ndarray, k: int, params: Params, seed: int) -> Clustering:
    """Spectral clustering of the kNN graph into ``k`` clusters."""
    from scipy.sparse.csgraph import connected_components

    graph = knn_graph(x, params.num_neighbors)
    embedding = spectral_embedding(graph, k, params.eigen_solver, seed)
    labels = assign_from_embedding(embedding, k, params.assign_labels, seed)
    components = int(connected_components(graph, directed=False)[0])
    return knn_vote_clustering(
        x, labels, k, params.num_neighbors, {"graph_edges": int(graph.nnz // 2), "graph_components": components}
    )


METHOD = ClusterMethod("spectral", fit_spectral, Params, k_criterion="eigengap")
