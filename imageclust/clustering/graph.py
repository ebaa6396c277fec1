"""The sparse k-nearest-neighbour graph the graph methods share (spectral, agglomerative, PIC;
spectral fine-tuning): exact neighbours by faiss, never a dense n x n matrix beyond 1,000 points,
the normalised Laplacian's eigenpairs, and the rule that assigns new points to a clustering without
centres: a vote of their ``num_neighbors`` nearest fitted points (rule ``knn``).
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
    return Clustering(
        centroids=cluster_means(x, labels, k),
        rule="knn",
        fit_labels=labels,
        stats=stats,
        arrays={
            "reference": np.asarray(x, dtype=np.float32),
            "reference_labels": labels,
            "num_neighbors": np.array(num_neighbors),
        },
    )


def laplacian_eigenpairs(
    graph: sp.csr_matrix, count: int, seed: int, solver: str = "arpack"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
