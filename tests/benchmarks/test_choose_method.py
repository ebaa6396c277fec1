"""The method-choice benchmark: every candidate on a project's features, scored with and without labels,
each selector's pick and regret."""

import json
import shutil
from pathlib import Path

import numpy as np
import yaml
from fakes import write_blobs

from benchmarks import choose_method
from imageclust.tables import Assignments, read_features, write_assignments

REPO = Path(__file__).resolve().parents[2]


def test_picks_and_regrets_by_hand():
    rows = {
        "none": {"acc": 0.70, "neighbour": 0.95, "linear": 0.99, "both": 0.97},
        "scan": {"acc": 0.80, "neighbour": 0.97, "linear": 0.90, "both": 0.935},
        "temi": {"acc": 0.65, "neighbour": 0.90, "linear": 0.98, "both": 0.94},
    }
    assert choose_method.picks(rows) == {
        "best_acc": 0.80,
        "neighbour": {"pick": "scan", "regret": 0.0},
        "linear": {"pick": "none", "regret": 0.1},
        "both": {"pick": "none", "regret": 0.1},
        # the floor judges by the neighbour score: SCAN, better there (worse by `both`), keeps its ACC;
        # TEMI, worse there, ends at the cluster stage's
        "floor": {
            "acc": {"none": 0.70, "scan": 0.80, "temi": 0.70},
            "worst_below_cluster_stage": 0.05,  # TEMI
            "worst_below_cluster_stage_floored": 0.0,
        },
    }


def test_every_candidate_on_a_projects_features(tmp_path, monkeypatch):
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"train_splits": ["train"]}}))
    _, labels, _ = write_blobs(tmp_path / "artifacts" / "features", n_per=30)
    features = read_features(tmp_path / "artifacts" / "features")
    at_chance = np.random.default_rng(0).permutation(labels)  # the cluster stage got nothing right
    write_assignments(
        tmp_path / "artifacts" / "cluster" / "assignments.parquet",
        Assignments.of(features, at_chance, np.ones(len(labels), np.float32), 3),
    )
    out, docs = tmp_path / "choose_method.json", tmp_path / "results.md"
    docs.write_text("before\n<!-- choose_method:begin -->\n<!-- choose_method:end -->\nafter\n")
    monkeypatch.setattr(choose_method, "DOCS", docs)
    choose_method.main(["--run", f"blobs={tmp_path}:test", "--methods", "none", "temi", "--out", str(out), "--docs"])
    report = json.loads(out.read_text())
    entry = report["datasets"]["blobs"]
    assert entry["split"] == "test" and set(entry["methods"]) == {"none", "temi"}
    assert entry["methods"]["temi"]["acc"] > 0.6 > entry["methods"]["none"]["acc"]
    assert entry["picks"]["neighbour"] == {"pick": "temi", "regret": 0.0}
    assert report["summary"]["neighbour"] == {"mean_regret": 0.0, "worst_regret": 0.0}
    assert "| blobs | " in docs.read_text() and docs.read_text().endswith("after\n")
