"""kNN graphs, the Laplacian's eigensolvers and power iteration clustering."""

import numpy as np
import pytest
from fakes import blobs


def test_knn_graph_is_sparse_symmetric_without_self_loops():
    from imageclust.clustering.graph import knn_graph

    x, _ = blobs(n_per=20)
    graph = knn_graph(x, 4)
    assert graph.shape == (60, 60) and graph.nnz <= 60 * 4 * 2
    assert (graph != graph.T).nnz == 0 and graph.diagonal().sum() == 0
    assert (np.asarray(graph.sum(1)).ravel() >= 4).all()  # each point keeps its own 4 neighbours


def test_nearest_neighbors_leave_each_point_out_even_with_duplicates():
    from imageclust.clustering.graph import nearest_neighbors

    x = np.array([[0.0], [0.0], [1.0], [3.0]], dtype=np.float32)  # points 0 and 1 coincide
    neighbors, sq = nearest_neighbors(x, 2)
    assert all(i not in row for i, row in enumerate(neighbors.tolist()))
    assert neighbors[0].tolist() == [1, 2] and neighbors[1].tolist() == [0, 2] and neighbors[3][0] == 2
    np.testing.assert_allclose(sq[0], [0.0, 1.0])
    np.testing.assert_allclose(sq[2], [1.0, 1.0])


@pytest.mark.parametrize("solver", ["arpack", "lobpcg"])
def test_iterative_laplacian_eigensolvers_match_the_dense_one(solver):
    import scipy.sparse as sp
    from scipy.sparse.csgraph import laplacian

    from imageclust.clustering.graph import knn_graph, laplacian_eigenpairs

    x, _ = blobs(n_per=400)  # above the size where the dense solver is used
    graph = knn_graph(x, 6)
    values, vectors, sqrt_degree = laplacian_eigenpairs(graph, 5, 0, solver)
    lap = laplacian(graph.astype(np.float64), normed=True)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(lap.toarray())[:5], atol=1e-4)
    np.testing.assert_allclose(values[:3], 0.0, atol=1e-4)  # three blobs: three components
    residual = lap @ vectors - vectors * values
    assert np.abs(residual).max() < 1e-3 and sp.issparse(lap)


def test_pic_climbs_to_the_maximum_of_the_walk_by_hand():
    # a path 0 - 1 - 2 - 3 - 4 - 5, all links 1 but a weak 2 - 3: two hills peaking at 1 and 4
    import scipy.sparse as sp

    from imageclust.clustering.pic import climb_to_maxima, gaussian_knn_graph, merge_singletons, power_iteration

    edges = {(0, 1): 1.0, (1, 2): 1.0, (2, 3): 0.01, (3, 4): 1.0, (4, 5): 1.0}
    rows, cols, vals = zip(*[(i, j, w) for (i, j), w in edges.items()] + [(j, i, w) for (i, j), w in edges.items()])
    graph = sp.csr_matrix((vals, (rows, cols)), shape=(6, 6))
    v = power_iteration(graph, alpha=0.5, iterations=50)
    np.testing.assert_allclose(v.sum(), 1.0)
    # the fixed point of v = a W v + (1 - a)/n: v is largest where the weighted degree is
    assert v[1] > max(v[0], v[2]) and v[4] > max(v[3], v[5])
    labels = climb_to_maxima(graph, v)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    # a kernel of distances: exp(-d^2 / sigma^2), symmetrised by summing
    w = gaussian_knn_graph(np.array([[1], [0]]), np.array([[0.04], [0.04]]), sigma=0.2)
    np.testing.assert_allclose(w.toarray(), [[0, 2 * np.exp(-1)], [2 * np.exp(-1), 0]])
    # a singleton joins its nearest neighbour that is not alone
    merged, count = merge_singletons(np.array([0, 0, 1, 2, 2]), np.array([[1], [0], [3], [4], [3]]))
    assert merged.tolist() == [0, 0, 1, 1, 1] and count == 1
