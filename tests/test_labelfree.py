"""Label-free scores: cluster sizes and their warning (the generalisation score is tested with TURTLE)."""

import numpy as np

from imageclust.labelfree import cluster_sizes, neighbour_kappa, size_warning


def test_cluster_sizes_relative_to_the_mean():
    clusters = np.array([0] * 6 + [1] * 3 + [-1] * 5)  # noise is left out; cluster 2 is empty
    assert cluster_sizes(clusters, 3) == {"largest_to_mean": 2.0, "smallest_to_mean": 0.0, "empty": 1}


def test_size_warning_names_sinks_and_starved_clusters_only():
    assert size_warning({"largest_to_mean": 1.9, "smallest_to_mean": 0.3, "empty": 0}) is None
    assert size_warning({"largest_to_mean": 2.5, "smallest_to_mean": 0.1, "empty": 0}) == (
        "the largest cluster is 2.5x the mean size; the smallest cluster is 0.10x the mean size"
    )
    assert size_warning({"largest_to_mean": 1.5, "smallest_to_mean": 0.0, "empty": 2}) == "2 empty cluster(s)"


def test_k_warning_only_when_the_margin_is_thin():
    from imageclust.labelfree import k_warning

    assert k_warning(7, 8, 0.015).startswith("K=7 was chosen over K=8 by a margin of 1.5%")
    assert k_warning(7, 8, 0.2) is None and k_warning(7, None, None) is None


def test_neighbour_kappa_by_hand_on_a_line():
    """Six points on a line, 1-NN, 3 folds of two: a held-out point takes the label of its nearest
    point in the other folds."""
    x = np.array([[0.0, 1.0], [0.1, 1.0], [0.2, 1.0], [1.0, 0.0], [1.0, 0.1], [1.0, 0.2]])  # cosine: two groups
    assert neighbour_kappa(x, np.array([0, 0, 0, 1, 1, 1]), neighbours=1) == 1.0
    # alternating labels: the seeded folds hold out {2, 5}, {1, 3}, {0, 4}, and each held-out point's
    # nearest point left (2 -> 1, 5 -> 4, 1 -> 0 or 2, 3 -> 4, 0 -> 1, 4 -> 3 or 5) has the other
    # label: accuracy 0, chance 0.5, kappa (0 - 0.5) / (1 - 0.5) = -1
    assert neighbour_kappa(x, np.array([0, 1, 0, 1, 0, 1]), neighbours=1) == -1.0
    assert neighbour_kappa(x, np.zeros(6, int)) == -1.0  # one cluster


def test_neighbour_kappa_ranks_blobs_over_chance_and_ignores_names():
    rng = np.random.default_rng(0)
    truth = np.arange(300) % 3
    x = rng.normal(size=(3, 16))[truth] * 3 + rng.normal(size=(300, 16))
    assert neighbour_kappa(x, truth) > 0.95
    assert abs(neighbour_kappa(x, rng.permutation(truth))) < 0.15  # chance is 0, whatever the sizes
    assert neighbour_kappa(x, truth + 7) == neighbour_kappa(x, truth)
