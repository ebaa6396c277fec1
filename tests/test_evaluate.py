import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imageclust.errors import DataError, ParamsError
from imageclust.evaluate import evaluate_sources
from imageclust.tables import UNLABELED, Assignments, FeatureTable, write_assignments, write_features

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "stages" / "evaluate.py"
LABEL_KEYS = {"acc", "acc_many_to_one", "nmi", "ari"}
U = UNLABELED


@pytest.fixture
def features() -> FeatureTable:
    # train: 4 labelled + 2 unlabelled rows; test: only unlabelled rows. Two directions = two classes.
    labels = np.array([0, 0, 1, 1, U, U, U, U, U, U])
    directions = np.array([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]], dtype=np.float32)
    return FeatureTable(
        ids=np.array([f"s{i}" for i in range(10)], dtype=object),
        splits=np.array(["train"] * 6 + ["test"] * 4, dtype=object),
        labels=labels,
        vectors=directions[[0, 1, 2, 3, 0, 2, 1, 3, 0, 2]],
    )


def assignments_for(features: FeatureTable, clusters, order=None) -> Assignments:
    order = np.arange(len(features)) if order is None else np.asarray(order)
    confidence = np.linspace(0.5, 1.0, len(features)).astype(np.float32)
    return Assignments(
        features.ids[order],
        features.splits[order],
        features.labels[order],
        np.asarray(clusters)[order],
        confidence[order],
    )


# Cluster ids 3 and 7 (k inferred as 8, so 6 empty clusters); perfect on the labelled rows.
CLUSTERS = [7, 7, 3, 3, 7, 3, 7, 3, 7, 3]


def test_report_splits_restrict_the_output(features):
    sources = {"cluster": assignments_for(features, CLUSTERS)}
    full = evaluate_sources(features, sources, 100, 0)
    only = evaluate_sources(features, sources, 100, 0, report_splits=["test", "all"])
    assert list(only["cluster"]) == ["test", "all"]
    assert only["cluster"]["all"] == full["cluster"]["all"]
    with pytest.raises(ParamsError, match="evaluate.splits=.*'val' is not among"):
        evaluate_sources(features, sources, 100, 0, report_splits=["val"])


def test_per_split_metrics(features):
    results = evaluate_sources(features, {"cluster": assignments_for(features, CLUSTERS)}, 100, 0)
    assert set(results) == {"cluster"} and set(results["cluster"]) == {"train", "test", "all"}
    train, test, everything = (results["cluster"][s] for s in ("train", "test", "all"))
    assert (train["n"], train["n_labeled"], test["n"], test["n_labeled"]) == (6, 4, 4, 0)
    assert (everything["n"], everything["n_labeled"]) == (10, 4)
    assert train["acc"] == train["nmi"] == train["ari"] == train["acc_many_to_one"] == pytest.approx(1.0)
    assert not LABEL_KEYS & set(test)  # absent, not zero or NaN
    assert everything["acc"] == pytest.approx(1.0)
    assert everything["clusters_nonempty"] == 2 and everything["clusters_empty"] == 6
    assert everything["cluster_size_min"] == 0 and everything["cluster_size_max"] == 5
    assert everything["silhouette"] > 0.5 and {"davies_bouldin", "calinski_harabasz"} <= set(everything)
    assert test["mean_confidence"] == pytest.approx(np.linspace(0.5, 1.0, 10)[6:].mean(), rel=1e-6)
    json.dumps(results)  # plain Python numbers only


def test_partly_labelled_split_scores_only_labelled_rows(features):
    clusters = [7, 7, 3, 3, 3, 7, 7, 3, 7, 3]  # the two unlabelled train rows are "wrong"
    train = evaluate_sources(features, {"c": assignments_for(features, clusters)}, 100, 0)["c"]["train"]
    assert train["acc"] == pytest.approx(1.0)


def test_label_free_scores_absent_for_single_cluster_split(features):
    clusters = [0, 0, 1, 1, 0, 1, 2, 2, 2, 2]
    results = evaluate_sources(features, {"c": assignments_for(features, clusters)}, 100, 0)["c"]
    assert not {"silhouette", "davies_bouldin", "calinski_harabasz"} & set(results["test"])
    assert "silhouette" in results["all"]


def test_independent_of_source_row_order(features):
    shuffled = np.random.default_rng(0).permutation(len(features))
    plain = evaluate_sources(features, {"c": assignments_for(features, CLUSTERS)}, 5, 1)
    assert evaluate_sources(features, {"c": assignments_for(features, CLUSTERS, shuffled)}, 5, 1) == plain


def test_several_sources(features):
    sources = {"cluster": assignments_for(features, CLUSTERS), "finetune": assignments_for(features, [0] * 10)}
    results = evaluate_sources(features, sources, 100, 0)
    assert results["finetune"]["all"]["acc"] == pytest.approx(0.5)
    assert "silhouette" not in results["finetune"]["all"]


def test_missing_and_extra_ids_raise(features):
    source = assignments_for(features, CLUSTERS)
    short = Assignments(*(getattr(source, f)[:-1] for f in ("ids", "splits", "labels", "clusters", "confidence")))
    with pytest.raises(DataError, match=r"source finetune: feature id 's9'"):
        evaluate_sources(features, {"finetune": short}, 100, 0)
    with pytest.raises(DataError, match=r"source finetune: id 's9' is not in the features"):
        evaluate_sources(features.select(np.arange(9)), {"finetune": source}, 100, 0)


def test_mismatched_labels_raise(features):
    source = assignments_for(features, CLUSTERS)
    source.labels = source.labels.copy()
    source.labels[0] = 1
    with pytest.raises(DataError, match="'s0' has another split or label"):
        evaluate_sources(features, {"c": source}, 100, 0)


# --- the stage script, end to end -------------------------------------------------------------


def run_stage_script(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(STAGE), *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture
def workspace(tmp_path, features):
    write_features(tmp_path / "features", features, meta={})
    write_assignments(tmp_path / "cluster.parquet", assignments_for(features, CLUSTERS))
    write_assignments(tmp_path / "finetune.parquet", assignments_for(features, CLUSTERS, np.arange(10)[::-1]))
    (tmp_path / "params.yaml").write_text("seed: 0\nevaluate:\n  max_silhouette_samples: 10\n")
    return tmp_path


def test_stage_writes_metrics(workspace):
    result = run_stage_script(
        workspace,
        "--features",
        "features",
        "--source",
        "cluster=cluster.parquet",
        "--source",
        "finetune=finetune.parquet",
        "--out",
        "metrics/evaluate.json",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((workspace / "metrics" / "evaluate.json").read_text())
    assert set(metrics) == {"cluster", "finetune"}
    assert metrics["cluster"] == metrics["finetune"]
    assert metrics["cluster"]["all"]["acc"] == pytest.approx(1.0)
    assert not LABEL_KEYS & set(metrics["cluster"]["test"])
    assert "cluster/all: acc=1.0000" in result.stderr


@pytest.mark.parametrize(
    "features_arg, source_arg, expected",
    [
        ("features", "finetune=missing.parquet", "missing.parquet: not found"),
        ("nowhere", "finetune=finetune.parquet", "nowhere: no feature shards"),
    ],
)
def test_stage_missing_input_leaves_output_untouched(workspace, features_arg, source_arg, expected):
    out = workspace / "metrics.json"
    out.write_text("previous\n")
    result = run_stage_script(
        workspace,
        "--features",
        features_arg,
        "--source",
        "cluster=cluster.parquet",
        "--source",
        source_arg,
        "--out",
        "metrics.json",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}")
    assert out.read_text() == "previous\n"


def test_k_stored_with_the_assignments_counts_trailing_empty_clusters(features, tmp_path):
    from imageclust.tables import read_assignments

    clusters = np.array([0, 0, 1, 1, 0, 1, 0, 1, 0, 1])
    a = assignments_for(features, clusters)
    a.num_clusters = 5  # clusters 2, 3 and 4 left empty by the method
    write_assignments(tmp_path / "a.parquet", a)
    back = read_assignments(tmp_path / "a.parquet")
    assert back.num_clusters == 5
    scores = evaluate_sources(features, {"m": back}, 100, 0)["m"]["all"]
    assert scores["clusters_empty"] == 3 and scores["cluster_size_min"] == 0
    # over-clustering: two pure clusters per class keep many-to-one ACC at 1, one-to-one ACC at 1/2
    split = assignments_for(features, np.array([0, 2, 1, 3, 0, 1, 2, 3, 0, 1]))
    over = evaluate_sources(features, {"m": split}, 100, 0)["m"]["train"]
    assert over["acc_many_to_one"] == 1.0 and over["acc"] == 0.5
