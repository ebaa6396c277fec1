"""benchmarks/turtle_few_rows.py: its variants and one case end to end on fake features."""

from __future__ import annotations

import numpy as np

from benchmarks.turtle_few_rows import run_case, variants
from imageclust.clustering.params import ClusterParams


def test_variants_fix_the_components_with_the_cap_off_or_cap_them():
    named = {name: (method, overrides) for name, method, overrides in variants([64], [25])}
    assert named == {
        "scan": ("scan", {}),
        "turtle64": ("turtle", {"pca_dim": 64, "rows_per_component": None}),
        "turtle_cap25": ("turtle", {"rows_per_component": 25}),
    }


def test_a_case_scores_every_variant_beside_the_cluster_stage():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    vectors = (np.eye(8)[labels] * 3 + rng.normal(scale=0.5, size=(120, 8))).astype(np.float32)
    row = run_case(vectors, labels, ClusterParams(k=4), dims=[8], caps=[40], seed=0)
    assert (row["n"], row["d"]) == (120, 8)
    assert set(row) == {"n", "d", "none", "scan", "turtle8", "turtle_cap40"}
    for name in ("none", "scan", "turtle8", "turtle_cap40"):
        assert 0.25 <= row[name]["acc"] <= 1 and 0 <= row[name]["kept"] <= 4
        assert -1 <= row[name]["neighbour"] <= 1 and -1 <= row[name]["linear"] <= 1
    assert row["turtle8"]["acc"] > 0.9  # four well-separated blobs
