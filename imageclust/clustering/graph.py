"""Clustering on a sparse k-nearest-neighbour graph: spectral clustering (Ng, Jordan & Weiss 2001;
von Luxburg 2007) and agglomerative clustering with kNN connectivity. Neither builds a dense
n x n matrix: the graph holds n x num_neighbors edges, found exactly by faiss.

Neither method has centres for new points: they are assigned by a vote of their
``num_neighbors`` nearest fitted points (rule ``knn``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .base import Clustering, cluster_means


def knn_graph(x: np.ndarray, num_neighbors: int) -> sp.csr_matrix:
    """Symmetric 0/1 connectivity of each point with its ``num_neighbors`` nearest others (L2)."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, k = len(x), min(num_neighbors, len(x) - 1)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, neighbors = index.search(x, k + 1)  # each point finds itself first (or a duplicate of it)
    rows = np.repeat(np.arange(n), k + 1)
    graph = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, neighbors.reshape(-1))), shape=(n, n))
    graph.setdiag(0)
    graph.eliminate_zeros()
    graph = graph.maximum(graph.T)  # i ~ j when either is among the other's neighbours
    return graph.tocsr()


def _knn_result(x: np.ndarray, labels: np.ndarray, k: int, num_neighbors: int, stats: dict) -> Clustering:
    labels = np.asarray(labels, dtype=np.int64)
    return Clustering(centroids=cluster_means(x, labels, k), rule="knn", fit_labels=labels, stats=stats,
                      arrays={"reference": np.asarray(x, dtype=np.float32), "reference_labels": labels,
                              "num_neighbors": np.array(num_neighbors)})


def fit_spectral(x: np.ndarray, params, seed: int) -> Clustering:
    from scipy.sparse.csgraph import connected_components
    from sklearn.cluster import SpectralClustering

    p = params.spectral
    graph = knn_graph(x, p.num_neighbors)
    model = SpectralClustering(n_clusters=params.k, affinity="precomputed", assign_labels=p.assign_labels,
                               eigen_solver=p.eigen_solver, random_state=seed).fit(graph)
    components = int(connected_components(graph, directed=False)[0])
    return _knn_result(x, model.labels_, params.k, p.num_neighbors,
                       {"graph_edges": int(graph.nnz // 2), "graph_components": components})


def fit_agglomerative(x: np.ndarray, params, seed: int) -> Clustering:
    from sklearn.cluster import AgglomerativeClustering

    p = params.agglomerative
    graph = knn_graph(x, p.num_neighbors)
    model = AgglomerativeClustering(n_clusters=params.k, linkage=p.linkage, connectivity=graph).fit(x)
    return _knn_result(x, model.labels_, params.k, p.num_neighbors, {"graph_edges": int(graph.nnz // 2)})


def fit_hdbscan(x: np.ndarray, params, seed: int) -> Clustering:
    """HDBSCAN (Campello, Moulavi & Sander 2013; scikit-learn's): clusters of varying density, their
    number found by the method (``cluster.k`` is not used), and points in no dense region left as
    noise (-1). New points take the vote of their nearest fitted points, noise included."""
    from sklearn.cluster import HDBSCAN

    p = params.hdbscan
    labels = HDBSCAN(min_cluster_size=p.min_cluster_size, min_samples=p.min_samples,
                     cluster_selection_epsilon=p.cluster_selection_epsilon, copy=True).fit(x).labels_
    k = max(int(labels.max()) + 1, 1)
    noise = int((labels == -1).sum())
    return _knn_result(x, labels, k, p.num_neighbors, {"clusters_found": int(labels.max()) + 1, "noise": noise,
                                                       "noise_fraction": noise / len(labels)})
