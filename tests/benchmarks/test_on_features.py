"""The benchmark of methods on a project's features: the finetune stage's code, with further spaces."""

import json
import shutil
from pathlib import Path

import numpy as np
from fakes import write_blobs

from benchmarks import on_features
from imageclust.io import write_json
from imageclust.tables import SPACES_INDEX, Assignments, FeatureTable, read_features, write_assignments, write_features

REPO = Path(__file__).resolve().parents[2]


def test_a_method_on_a_projects_features_with_a_further_space(tmp_path):
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")  # where the artifacts are
    x, labels, splits = write_blobs(tmp_path / "artifacts" / "features", n_per=30)
    features = read_features(tmp_path / "artifacts" / "features")
    start = np.zeros(len(labels), dtype=np.int64)  # one cluster: TURTLE starts at random for the others
    write_assignments(
        tmp_path / "artifacts" / "cluster" / "assignments.parquet",
        Assignments.of(features, start, np.ones(len(labels), np.float32), 3),
    )
    other = FeatureTable(features.ids, features.splits, features.labels, x[:, ::-1].copy())
    write_features(tmp_path / "spaces" / "reversed", other, {"backbone": "test"})
    write_json(tmp_path / "spaces" / SPACES_INDEX, {"spaces": [{"name": "reversed"}]})
    out = tmp_path / "result.json"
    argv = ["--project", str(tmp_path), "--method", "turtle", "--name", "blobs", "--out", str(out)]
    tiny = ["--set", "outer_steps=60", "--set", "restarts=2", "--set", "pca_dim=4", "--set", "init=random"]
    on_features.main([*argv, *tiny, "--spaces", str(tmp_path / "spaces"), "--threads", "1"])
    result = json.loads(out.read_text())["blobs"]
    assert result["spaces"] == 2 and result["acc"] == 1.0 and len(result["generalisation_scores"]) == 2
    assert result["overrides"]["outer_steps"] == 60
