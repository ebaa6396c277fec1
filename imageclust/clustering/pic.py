"""Power iteration clustering as DeepCluster runs it (Caron et al. 2018, section 3.3 and appendix;
after Lin & Cohen 2010): a few steps of a lazy random walk with restart on a Gaussian-weighted
kNN graph give each point a value v; every point then follows its best uphill edge,
``argmax_j w_ij (v_j - v_i)``, and the points that reach the same local maximum of v form a
cluster. The method finds its own number of clusters (``cluster.k`` is not used). Clusters of one
point join the cluster of their nearest neighbour that is not a singleton, as DeepCluster does.

The Gaussian kernel ``exp(-||x_i - x_j||^2 / sigma^2)`` assumes unit-length features
(``cluster.l2_normalize``), for which DeepCluster's sigma of 0.2 was chosen. New points are
assigned by a vote of their ``num_neighbors`` nearest fitted points (rule ``knn``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..config import Int, Section
from .base import Clustering, ClusterMethod
from .graph import knn_vote_clustering, nearest_neighbors


class Params(Section):
    num_neighbors: Int = Field(5, ge=1, description="PIC's kNN graph, also the vote that assigns new points")
    sigma: float = Field(
        0.2, gt=0, description="Gaussian kernel bandwidth, chosen by DeepCluster for unit-length features"
    )
    alpha: float = Field(0.001, gt=0, lt=1, description="weight of the walk against the restart")
    iterations: Int = Field(200, ge=1, description="power iterations")
    distribute_singletons: bool = Field(
        True, description="a cluster of one point joins the cluster of its nearest neighbour that is not alone"
    )


def gaussian_knn_graph(neighbors: np.ndarray, sq_distances: np.ndarray, sigma: float) -> sp.csr_matrix:
    """W = A + A^T for A_ij = exp(-d_ij^2 / sigma^2) over each point's listed neighbours."""
    n, k = neighbors.shape
    rows = np.repeat(np.arange(n), k)
    a = sp.csr_matrix((np.exp(-sq_distances.reshape(-1) / sigma**2), (rows, neighbors.reshape(-1))), shape=(n, n))
    return (a + a.T).tocsr()


def power_iteration(graph: sp.csr_matrix, alpha: float, iterations: int) -> np.ndarray:
    """v <- alpha W^T v + (1 - alpha) / n, L1-normalised, from the uniform vector."""
    n = graph.shape[0]
    v = np.full(n, 1.0 / n)
    transposed = graph.T.tocsr()
    for _ in range(iterations):
        v = alpha * (transposed @ v) + (1.0 - alpha) / n
        v /= v.sum()
    return v


def climb_to_maxima(graph: sp.csr_matrix, v: np.ndarray) -> np.ndarray:
    """Each point's local maximum of ``v`` reached by best-uphill edges, as consecutive cluster ids."""
    n = graph.shape[0]
    rows = np.repeat(np.arange(n), np.diff(graph.indptr))
    gain = graph.data * (v[graph.indices] - v[rows])
    order = np.lexsort((-gain, rows))  # per row, the largest gain first (ties: the first edge)
    has_edges = np.diff(graph.indptr) > 0
    best = order[graph.indptr[:-1][has_edges]]
    pointers = np.arange(n)
    uphill = gain[best] > 0
    pointers[np.flatnonzero(has_edges)[uphill]] = graph.indices[best[uphill]]
    while True:  # pointer jumping: v rises strictly along pointers, so there are no cycles
        jumped = pointers[pointers]
        if np.array_equal(jumped, pointers):
            break
        pointers = jumped
    return np.unique(pointers, return_inverse=True)[1]


def merge_singletons(labels: np.ndarray, neighbors: np.ndarray) -> tuple[np.ndarray, int]:
    """Move each point alone in its cluster to the cluster of its nearest neighbour that is not alone."""
    sizes = np.bincount(labels)
    labels = labels.copy()
    merged = 0
    for point in np.flatnonzero(sizes[labels] == 1):
        for neighbor in neighbors[point]:
            if sizes[labels[neighbor]] > 1:
                labels[point] = labels[neighbor]
                merged += 1
                break
    return np.unique(labels, return_inverse=True)[1], merged


def fit_pic(x: np.ndarray, k: int, params: Params, seed: int) -> Clustering:
    p = params
    neighbors, sq_distances = nearest_neighbors(x, p.num_neighbors)
    graph = gaussian_knn_graph(neighbors, sq_distances, p.sigma)
    labels = climb_to_maxima(graph, power_iteration(graph, p.alpha, p.iterations))
    maxima = int(labels.max()) + 1
    merged = 0
    if p.distribute_singletons:
        labels, merged = merge_singletons(labels, neighbors)
    found = int(labels.max()) + 1
    return knn_vote_clustering(
        x,
        labels,
        found,
        p.num_neighbors,
        {"clusters_found": found, "local_maxima": maxima, "singletons_merged": merged},
    )


METHOD = ClusterMethod("pic", fit_pic, Params, finds_k=True)
