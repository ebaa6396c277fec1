"""The linear-probe benchmark: the ceiling it reports follows the features, not a constant."""

import json
import shutil
from unittest.mock import ANY

import numpy as np
import pytest

from benchmarks import linear_probe
from imageclust.tables import FeatureTable, write_features


def _project(tmp_path, labels, vectors, splits):
    n = len(labels)
    table = FeatureTable(
        np.array([f"s{i}" for i in range(n)], dtype=object),
        np.array(splits, dtype=object),
        np.asarray(labels, dtype=np.int64),
        vectors.astype(np.float32),
    )
    write_features(tmp_path / "artifacts" / "features", table, {})
    return tmp_path


def _blobs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    centres = np.eye(4, 8) * 5
    return labels, centres[labels] + rng.normal(size=(n, 8)), ["test" if i % 5 == 0 else "train" for i in range(n)]


def test_separable_classes_reach_the_ceiling_and_shuffled_labels_do_not(tmp_path):
    labels, vectors, splits = _blobs()
    clean = linear_probe.probe(_project(tmp_path / "a", labels, vectors, splits) / "artifacts" / "features")
    assert clean["linear_probe_acc"] == 1.0 and clean["neighbor_label_agreement"] > 0.95
    shuffled = np.random.default_rng(1).permutation(labels)
    noisy = linear_probe.probe(_project(tmp_path / "b", shuffled, vectors, splits) / "artifacts" / "features")
    assert noisy["linear_probe_acc"] < 0.6 and noisy["neighbor_label_agreement"] < 0.5


def test_command_merges_named_runs_and_refuses_unlabelled_splits(tmp_path):
    labels, vectors, splits = _blobs()
    project = _project(tmp_path / "p", labels, vectors, splits)
    out = tmp_path / "probe.json"
    out.write_text(json.dumps({"older/seed0": {"linear_probe_acc": 0.5}}))
    linear_probe.main(["--run", f"toy/seed0={project}", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["older/seed0"] == {"linear_probe_acc": 0.5} and report["toy/seed0"]["dim"] == 8
    # a further representation space of the same project (artifacts/spaces/<name>)
    shutil.copytree(project / "artifacts" / "features", project / "artifacts" / "spaces" / "wide")
    linear_probe.main(["--run", f"toy/wide={project}:wide", "--out", str(out)])
    assert json.loads(out.read_text())["toy/wide"] == {**report["toy/seed0"], "seconds": ANY}
    with pytest.raises(SystemExit, match="'val' is missing"):
        linear_probe.main(["--run", f"toy={project}", "--score-split", "val", "--out", str(out)])
    with pytest.raises(SystemExit):
        linear_probe.main(["--run", str(project), "--out", str(out)])
