"""Label-free scores: cluster sizes and their warning (the generalisation score is tested with TURTLE)."""

import numpy as np

from imageclust.labelfree import cluster_sizes, size_warning


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
