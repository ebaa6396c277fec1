"""K chosen without labels: each criterion finds the number of blobs, through the stage too."""

import numpy as np
import pytest
from fakes import four_blobs

from imageclust.clustering.params import ClusterParams
from imageclust.clustering.registry import METHODS
from imageclust.clustering.stage import ASSIGNMENTS_FILE, run_clustering
from imageclust.tables import FeatureTable, read_assignments, write_features

# ---------------------------------------------------------------- the cluster stage


def params(**cluster):
    cluster = {"k": 3, "kmeans": {"n_init": 3}, **cluster}
    return 0, ["train"], ClusterParams(**cluster)


# ---------------------------------------------------------------- K chosen without labels


@pytest.mark.parametrize(
    "method, chosen, criterion",
    [
        ("kmeans", "auto", "stability"),
        ("gmm", "auto", "bic"),
        ("spectral", "auto", "eigengap"),
        ("agglomerative", "auto", "stability"),
        ("kmeans", "eigengap", "eigengap"),
        ("gmm", "silhouette", "silhouette"),
        ("kmeans", "silhouette_umap", "silhouette_umap"),
        ("kmeans", "prediction_strength", "prediction_strength"),
        ("kmeans", "stability", "stability"),
        ("kmeans", "generalisation", "generalisation"),
    ],
)
def test_auto_k_finds_the_number_of_blobs(method, chosen, criterion):
    from imageclust.clustering.choose_k import choose_k

    x, _ = four_blobs()
    p = ClusterParams(
        method=method,
        k="auto",
        auto_k={"min_k": 2, "max_k": 8, "criterion": chosen, "num_neighbors": 8},
        kmeans={"n_init": 3},
    )
    k, curve, name = choose_k(x, p.auto_k, METHODS[method], p.block, 0)
    assert (k, name) == (4, criterion)
    assert sorted(curve) == list(range(2, 9))


def test_auto_k_through_the_stage_records_the_curve_and_finetune_follows(tmp_path):
    from imageclust.plots.curves import plot_k_curve

    x, labels = four_blobs(n_per=30)
    n = len(labels)
    write_features(
        tmp_path / "f",
        FeatureTable(
            ids=np.array([f"s{i}" for i in range(n)], dtype=object),
            splits=np.array(["train"] * n, dtype=object),
            labels=labels,
            vectors=x,
        ),
        {},
    )
    g, d, c = params(k="auto", auto_k={"min_k": 2, "max_k": 6})
    stats = run_clustering(tmp_path / "f", tmp_path / "c", g, d, c)
    assert stats["k"] == 4 and stats["k_auto"] and stats["k_criterion"] == "stability"
    assert set(stats["k_curve"]) == {"2", "3", "4", "5", "6"}
    curve = {int(k): v for k, v in stats["k_curve"].items()}
    second = min((k for k in curve if k != 4), key=lambda k: (curve[k], -k))  # the lowest; ties: the larger K
    assert stats["k_runner_up"] == second
    spread = max(curve.values()) - min(curve.values())
    assert stats["k_margin"] == pytest.approx((curve[second] - curve[4]) / spread, abs=1e-4)
    assert read_assignments(tmp_path / "c" / ASSIGNMENTS_FILE).num_clusters == 4
    rows = (tmp_path / "c" / "k_curve.csv").read_text().splitlines()
    assert rows[0] == "k,score,criterion,chosen" and rows[3].startswith("4,") and rows[3].endswith(",1")
    plot_k_curve(tmp_path / "c" / "k_curve.csv", tmp_path / "k.png")
    assert (tmp_path / "k.png").stat().st_size > 1000


def test_bic_is_only_for_a_mixture():
    with pytest.raises(ValueError, match="cluster.auto_k.criterion=bic needs cluster.method=gmm"):
        ClusterParams(method="kmeans", k="auto", auto_k={"criterion": "bic"})
    assert ClusterParams(method="gmm", auto_k={"criterion": "bic"}).auto_k.criterion == "bic"


def test_k_auto_or_an_integer():
    assert ClusterParams(k="auto").k == "auto"
    for bad in ("many", 1, True, 2.5):
        with pytest.raises(ValueError):
            ClusterParams(k=bad)
    with pytest.raises(ValueError, match="below min_k"):
        ClusterParams(auto_k={"min_k": 5, "max_k": 3})
