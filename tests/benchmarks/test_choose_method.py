"""The method-choice benchmark: every candidate on a project's features, scored with and without labels,
each selector's pick and regret."""

import json

import numpy as np
from fakes import blob_project

from benchmarks import choose_method
from imageclust.tables import (
    REFEREES_FOLDER,
    SPACES_INDEX,
    FeatureShardWriter,
    read_assignments,
    read_features,
    write_features_meta,
)


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
    blob_project(tmp_path, {"data": {"train_splits": ["train"]}}, n_per=30)
    out, docs = tmp_path / "choose_method.json", tmp_path / "results.md"
    docs.write_text("before\n<!-- choose_method:begin -->\n<!-- choose_method:end -->\nafter\n")
    monkeypatch.setattr(choose_method, "DOCS", docs)
    choose_method.main(["--run", f"blobs={tmp_path}:test", "--methods", "none", "temi", "--out", str(out), "--docs"])
    report = json.loads(out.read_text())
    entry = report["datasets"]["blobs"]
    assert entry["split"] == "test" and set(entry["methods"]) == {"none", "temi"}
    assert entry["methods"]["temi"]["acc"] > 0.6 > entry["methods"]["none"]["acc"]
    assert entry["picks"]["neighbour"] == {"pick": "temi", "regret": 0.0}
    assert report["summary"]["neighbour"] == {"mean_regret": 0.0, "worst_regret": 0.0, "datasets": 1}
    assert "referees" not in entry["picks"] and "referees" not in report["summary"]  # the project has none
    assert "| blobs | " in docs.read_text() and docs.read_text().endswith("after\n")


def test_a_project_with_referee_spaces_gets_their_selector(tmp_path):
    """A referee space that holds the cluster stage's partition (at chance for the labels) of 40 training
    rows: judged there, the cluster stage's assignment wins, as auto would pick it."""
    blob_project(tmp_path, {"data": {"train_splits": ["train"]}}, n_per=30)
    features = read_features(tmp_path / "artifacts/features")
    initial = read_assignments(tmp_path / "artifacts/cluster/assignments.parquet")
    train = np.flatnonzero(features.splits == "train")[:40]
    spaces = tmp_path / "artifacts/spaces"
    referee = spaces / REFEREES_FOLDER / "judge"
    referee.mkdir(parents=True)
    vectors = np.eye(4, dtype=np.float32)[initial.clusters[train]] * 4
    with FeatureShardWriter(referee / "part-00000.parquet", 4) as writer:
        writer.write(features.ids[train], features.splits[train], features.labels[train], vectors)
    write_features_meta(referee, {}, {"part-00000.parquet": 40}, 4)
    (spaces / SPACES_INDEX).write_text(json.dumps({"spaces": [], "referees": [{"name": "judge"}]}))
    out = tmp_path / "choose_method.json"
    choose_method.main(["--run", f"blobs={tmp_path}:test", "--methods", "none", "temi", "--out", str(out)])
    entry = json.loads(out.read_text())["datasets"]["blobs"]
    assert entry["methods"]["none"]["by_referee"] == {"judge": 1.0} == {"judge": entry["methods"]["none"]["referees"]}
    assert entry["picks"]["referees"]["pick"] == "none" and entry["picks"]["neighbour"]["pick"] == "temi"
    assert entry["picks"]["referees"]["regret"] > 0.2  # TEMI recovers the blobs, the cluster stage does not


def test_a_project_with_further_spaces_passes_them_on_and_judges_in_each(tmp_path, monkeypatch):
    """extract.spaces: the finetune stage is given the spaces' folder (TURTLE fits a head in each), and the
    neighbour score is the mean over the extract stage's features and each space, as auto judges."""
    blob_project(tmp_path, {"data": {"train_splits": ["train"]}}, n_per=30)
    features = read_features(tmp_path / "artifacts/features")
    spaces = tmp_path / "artifacts/spaces"
    second = spaces / "second"
    second.mkdir(parents=True)
    noise = np.random.default_rng(0).normal(size=(len(features.ids), 6)).astype(np.float32)
    with FeatureShardWriter(second / "part-00000.parquet", 6) as writer:
        writer.write(features.ids, features.splits, features.labels, noise)
    write_features_meta(second, {}, {"part-00000.parquet": len(features.ids)}, 6)
    (spaces / SPACES_INDEX).write_text(json.dumps({"spaces": [{"name": "second"}], "referees": []}))
    given, run_finetune = [], choose_method.run_finetune

    def recording(*args, **kwargs):
        given.append(kwargs.get("spaces_dir"))
        return run_finetune(*args, **kwargs)

    monkeypatch.setattr(choose_method, "run_finetune", recording)
    out = tmp_path / "choose_method.json"
    choose_method.main(["--run", f"blobs={tmp_path}:test", "--methods", "none", "temi", "--out", str(out)])
    assert given == [spaces, spaces]
    for row in json.loads(out.read_text())["datasets"]["blobs"]["methods"].values():
        in_features, in_noise = row["neighbour_by_space"]
        assert in_features > in_noise  # the blobs are apart in the features only
        assert abs(row["neighbour"] - (in_features + in_noise) / 2) <= 1e-4
