"""benchmarks/size_prior.py: its draws and its count of the classes that keep a cluster."""

from __future__ import annotations

import numpy as np

from benchmarks.size_prior import classes_kept, draw_pair


def test_classes_kept_counts_classes_mostly_in_their_own_matched_cluster():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 5)
    # class 0 whole in cluster 0; class 1 split 7/3 (70%: not kept); class 2 shares cluster 2 with class 1's rest
    clusters = np.array([0] * 10 + [1] * 7 + [2] * 3 + [2] * 5)
    assert classes_kept(labels, clusters) == 2  # 0, and 2 (all 5 in cluster 2, matched to it)
    assert classes_kept(labels, clusters, share=0.7) == 3


def test_draw_pair_balanced_and_ten_to_one():
    labels = np.repeat(np.arange(10), 200)
    drawn = draw_pair(labels, 150, seed=0)
    assert sorted(np.bincount(labels[drawn["balanced"]])) == [150] * 10
    sizes = sorted(np.bincount(labels[drawn["sizes 10:1"]]), reverse=True)
    assert sizes[0] == 150 and sizes[-1] == 15 and all(a >= b for a, b in zip(sizes, sizes[1:]))
