"""Clustering on a sparse k-nearest-neighbour graph: spectral clustering (Ng, Jordan & Weiss 2001;
von Luxburg 2007) and agglomerative clustering with kNN connectivity; HDBSCAN. None builds a
dense n x n matrix beyond 1,000 points: the graph holds n x num_neighbors edges, found exactly by faiss.

None of them has centres for new points: they are assigned by a vote of their
``num_neighbors`` nearest fitted points (rule ``knn``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .base import Clustering, cluster_means


def nearest_neighbors(x: np.ndarray, num_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Each point's ``num_neighbors`` nearest other points (exact, faiss) and their squared L2 distances."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, k = len(x), min(num_neighbors, len(x) - 1)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    sq_distances, neighbors = index.search(x, k + 1)
    # drop each point itself; a duplicate can come first, so drop the last column where it is absent
    itself = neighbors == np.arange(n)[:, None]
    itself[~itself.any(1), -1] = True
    itself[itself.cumsum(1) > 1] = False  # only the first match counts
    keep = ~itself
    return neighbors[keep].reshape(n, k), sq_distances[keep].reshape(n, k)


def knn_graph(x: np.ndarray, num_neighbors: int) -> sp.csr_matrix:
    """Symmetric 0/1 connectivity of each point with its ``num_neighbors`` nearest others (L2)."""
    neighbors, _ = nearest_neighbors(x, num_neighbors)
    n, k = neighbors.shape
    rows = np.repeat(np.arange(n), k)
    graph = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, neighbors.reshape(-1))), shape=(n, n))
    graph = graph.maximum(graph.T)  # i ~ j when either is among the other's neighbours
    return graph.tocsr()


def knn_vote_clustering(x: np.ndarray, labels: np.ndarray, k: int, num_neighbors: int, stats: dict) -> Clustering:
    """A clustering of ``x`` with no centres of its own (graph methods): it keeps ``x`` and ``labels``
    as reference points, and new rows take the majority label of their ``num_neighbors`` nearest."""
    labels = np.asarray(labels, dtype=np.int64)
    return Clustering(centroids=cluster_means(x, labels, k), rule="knn", fit_labels=labels, stats=stats,
                      arrays={"reference": np.asarray(x, dtype=np.float32), "reference_labels": labels,
                              "num_neighbors": np.array(num_neighbors)})


def laplacian_eigenpairs(graph: sp.csr_matrix, count: int, seed: int,
                         solver: str = "arpack") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``count`` smallest eigenvalues of the normalised Laplacian L = I - D^-1/2 W D^-1/2, their
    eigenvectors and sqrt(degree), found as the largest of 2I - L: by Lanczos (ARPACK) or LOBPCG.
    No shift-invert: that factorises L, which takes minutes on 70,000 points; this takes seconds."""
    from scipy.sparse.csgraph import laplacian
    from scipy.sparse.linalg import eigsh, lobpcg

    lap, sqrt_degree = laplacian(graph.astype(np.float64), normed=True, return_diag=True)
    shifted = 2.0 * sp.identity(graph.shape[0], format="csr") - lap
    count = min(count, graph.shape[0] - 1)
    rng = np.random.default_rng(seed)
    if graph.shape[0] <= 1000:  # small: the dense solver is exact and instant
        values, vectors = np.linalg.eigh(shifted.toarray())
        values, vectors = values[-count:], vectors[:, -count:]
    elif solver == "lobpcg":
        start = rng.standard_normal((graph.shape[0], count))
        start[:, 0] = sqrt_degree  # the first eigenvector of L, exactly
        values, vectors = lobpcg(shifted, start, largest=True, tol=1e-5, maxiter=500)
    else:
        values, vectors = eigsh(shifted, k=count, which="LA", v0=rng.random(graph.shape[0]))
    order = np.argsort(-values)
    return 2.0 - values[order], vectors[:, order], sqrt_degree


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


def fit_spectral(x: np.ndarray, params, seed: int) -> Clustering:
    """Spectral clustering of the kNN graph: the normalised Laplacian's first K eigenvectors, then
    ``assign_labels`` turns them into K clusters."""
    from scipy.sparse.csgraph import connected_components

    p = params.spectral
    graph = knn_graph(x, p.num_neighbors)
    embedding = spectral_embedding(graph, params.k, p.eigen_solver, seed)
    labels = assign_from_embedding(embedding, params.k, p.assign_labels, seed)
    components = int(connected_components(graph, directed=False)[0])
    return knn_vote_clustering(x, labels, params.k, p.num_neighbors,
                               {"graph_edges": int(graph.nnz // 2), "graph_components": components})


def fit_agglomerative(x: np.ndarray, params, seed: int) -> Clustering:
    from sklearn.cluster import AgglomerativeClustering

    p = params.agglomerative
    graph = knn_graph(x, p.num_neighbors)
    model = AgglomerativeClustering(n_clusters=params.k, linkage=p.linkage, connectivity=graph).fit(x)
    return knn_vote_clustering(x, model.labels_, params.k, p.num_neighbors, {"graph_edges": int(graph.nnz // 2)})


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
    return knn_vote_clustering(x, labels, k, p.num_neighbors, {"clusters_found": int(labels.max()) + 1,
                                                               "noise": noise, "noise_fraction": noise / len(labels)})
