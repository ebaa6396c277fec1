"""finetune.method: auto: every candidate fitted on the same features, the best by nearest neighbours
in the extract stage's features (and any further spaces) kept, its model what predict uses; bad
candidates refused by name."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fakes import frozen_run

from imageclust.config import load_section
from imageclust.errors import ParamsError
from imageclust.finetune import auto
from imageclust.finetune.params import FinetuneParams
from imageclust.finetune.registry import METHODS
from imageclust.metrics import clustering_accuracy

FEW = {"temi": {"epochs": 2, "num_heads": 1, "num_neighbors": 5}}


@pytest.fixture(autouse=True)
def no_dvc_repo(monkeypatch):
    import dvclive.live

    monkeypatch.setattr(dvclive.live, "get_dvc_repo", lambda: None)


def blobs(n=90, d=16, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    return (np.eye(d)[labels] * 4.0 + rng.normal(scale=0.3, size=(n, d))).astype(np.float32), labels


def auto_run(initial, candidates=("none", "temi"), overrides=FEW, checkpoint_dir=None, n=90, screen_rows=None):
    x, labels = blobs(n)
    block = {"candidates": list(candidates), "overrides": overrides, "screen_rows": screen_rows}
    params = FinetuneParams(method="auto", batch_size=32, checkpoint_every=1, auto=block)
    return frozen_run(
        x, labels, np.ones(len(x), bool), 3, params, initial=initial, checkpoint_dir=checkpoint_dir, run_id="auto-test"
    )


def test_auto_keeps_the_candidate_that_generalises_best(tmp_path):
    """A cluster stage at chance: TEMI recovers the blobs and wins; its model is what predict uses."""
    _, labels = blobs()
    at_chance = np.random.default_rng(0).permutation(labels)
    result = METHODS["auto"].run(auto_run(at_chance, checkpoint_dir=tmp_path / "ckpt"))
    scores = result.stats["candidate_scores"]
    assert set(scores) == {"none", "temi"} and scores["temi"] > 0.9 > abs(scores["none"])
    assert result.stats["chosen"] == "temi" and result.model["method"] == "temi"
    clusters, _, _ = METHODS["temi"].assign({**result.model, "num_clusters": 3}, blobs()[0])  # as the stage saves it
    np.testing.assert_array_equal(clusters, result.clusters)
    assert not any((tmp_path / "ckpt").rglob("*.pt"))  # no candidate's resume state left behind


def test_auto_keeps_the_cluster_stage_when_it_is_best():
    _, labels = blobs()
    result = METHODS["auto"].run(auto_run(labels, candidates=("none",), overrides={}))
    assert result.stats["chosen"] == "none" and result.model == {"method": "none"}
    np.testing.assert_array_equal(result.clusters, labels)


def test_with_more_spaces_every_candidate_is_judged_in_all_of_them():
    """The extract stage's features hold nothing (noise); a further space holds the blobs. Judged there
    too, TURTLE, which fits a head in it, beats the cluster stage's assignment at chance."""
    from imageclust.finetune.guard import Referee

    blobs_space, labels = blobs()
    noise = np.random.default_rng(1).normal(size=blobs_space.shape).astype(np.float32)
    at_chance = np.random.default_rng(0).permutation(labels)
    turtle = {"init": "random", "outer_steps": 60, "outer_lr": 0.05, "batch_size": 90, "restarts": 1}
    run = auto_run(at_chance, candidates=("none", "turtle"), overrides={"turtle": turtle})
    run = dataclasses.replace(run, vectors=noise, more_spaces={"blobs": blobs_space})
    result = METHODS["auto"].run(run)
    referee = Referee(noise, seed=0, more_spaces=[blobs_space])
    assert result.stats["chosen"] == "turtle" and clustering_accuracy(labels, result.clusters) > 0.9
    assert result.stats["candidate_scores"] == {
        "none": round(referee.score(at_chance), 4),
        "turtle": round(referee.score(result.clusters), 4),
    }
    assert "1 more space(s), averaged" in result.stats["chosen_by"]
    assert result.stats["candidate_scores_by_space"]["turtle"] == [
        round(v, 4) for v in referee.by_space(result.clusters)
    ]


def test_with_referee_spaces_the_candidates_are_judged_there_alone():
    """The extract stage's features hold one partition (TEMI recovers it from a cluster stage at chance);
    a referee space of 60 of the rows holds the cluster stage's. Judged where they were fitted TEMI wins;
    judged in the referee space alone, the cluster stage's assignment does."""
    from imageclust.finetune.guard import RefereeSpace

    _, labels = blobs()
    other = np.random.default_rng(0).permutation(labels)
    run = auto_run(other)
    assert METHODS["auto"].run(run).stats["chosen"] == "temi"

    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(90, 60, replace=False))
    referee = RefereeSpace(rows, (np.eye(8)[other[rows]] * 4 + rng.normal(scale=0.3, size=(60, 8))).astype(np.float32))
    result = METHODS["auto"].run(dataclasses.replace(run, referee_spaces={"judge": referee}))
    assert result.stats["chosen"] == "none" and result.stats["judged_in"] == ["judge"]
    assert result.stats["candidate_scores"]["none"] == round(referee.judge(other, "neighbour"), 4) == 1.0
    assert result.stats["candidate_scores"]["temi"] < 0.5
    assert result.stats["chosen_by"] == "neighbour score in the referee space(s) judge (extract.referees), averaged"
    assert list(result.stats["candidate_scores_by_space"]) == ["none", "temi"]


@pytest.mark.parametrize(
    "scores, chosen",
    [
        ({"none": [0.9], "scan": [0.8]}, "none"),  # one space: the best score
        ({"none": [0.9], "scan": [0.9]}, "none"),  # the first of equals
        ({"none": [0.9, 0.8], "scan": [0.95, 0.85]}, "scan"),
        # best on average, but the best other candidate is better in the second space: it is kept
        ({"none": [0.95, 0.80], "scan": [0.92, 0.77], "turtle": [0.92, 0.82]}, "turtle"),
        ({"none": [0.95, 0.85], "turtle": [0.92, 0.82]}, "none"),  # better in every space
        ({"none": [0.95, 0.85]}, "none"),
    ],
)
def test_choose_by_the_mean_with_the_floors_rule_for_none(scores, chosen):
    assert auto.choose(scores) == chosen


def test_in_referee_spaces_none_has_no_special_rule():
    """Judged in referee spaces nobody was fitted in, the best mean wins, the cluster stage's too."""
    scores = {"none": [0.95, 0.80], "turtle": [0.92, 0.82]}  # means 0.875 and 0.87
    assert auto.choose(scores) == "turtle"  # in fitted spaces: better in the second, so it is kept
    assert auto.choose(scores, fitted_spaces=False) == "none"


@pytest.mark.parametrize("screen_rows, fits", [(200, [200, 200, 300]), (300, [300, 300])])
def test_a_screen_judges_the_candidates_on_a_sample_and_fits_the_winner_on_every_row(
    tmp_path, monkeypatch, screen_rows, fits
):
    """Fewer screen rows than training rows: each candidate is fitted on that many, then the winner on
    every row; no fewer: every candidate on every row, as without a screen."""
    seen = []
    for name in ("none", "temi"):
        record = auto.METHODS[name]

        def counting(run, record=record):
            seen.append((record.name, len(run.vectors), int(run.train.sum())))
            return record.run(run)

        monkeypatch.setitem(auto.METHODS, name, dataclasses.replace(record, run=counting))
    _, labels = blobs(300)
    at_chance = np.random.default_rng(0).permutation(labels)
    result = auto.finetune_auto(auto_run(at_chance, n=300, screen_rows=screen_rows, checkpoint_dir=tmp_path / "ckpt"))
    assert [rows for _, rows, _ in seen] == [trained for _, _, trained in seen] == fits
    assert [name for name, _, _ in seen] == ["none", "temi", "temi"][: len(fits)]
    assert result.stats["chosen"] == "temi" and len(result.clusters) == 300
    assert result.stats.get("screened_on_rows") == (200 if len(fits) == 3 else None)
    assert clustering_accuracy(labels, result.clusters) > 0.8  # from a cluster stage at chance (about 0.36)
    assert not any((tmp_path / "ckpt").rglob("*.pt"))  # neither the screen's nor the final fit's resume state


def test_the_screen_keeps_every_training_row_the_referees_judge_on():
    train = np.arange(0, 1000, 2)  # the even rows train
    judged = np.array([3, 10, 12, 14, 998])  # a referee's rows; 3 is no training row
    rows = auto.screen_rows(train, judged, 200, seed=0)
    assert len(rows) == len(np.unique(rows)) == 200 and np.all(np.diff(rows) > 0)
    assert set(rows) <= set(train) and {10, 12, 14, 998} <= set(rows) and 3 not in rows
    few = auto.screen_rows(train, train[:300], 200, seed=0)  # more judged rows than the screen holds
    assert len(few) == 200 and set(few) <= set(train[:300])
    np.testing.assert_array_equal(rows, auto.screen_rows(train, judged, 200, seed=0))  # seeded


def test_a_screened_run_judges_in_the_referee_space_on_all_its_rows():
    from imageclust.finetune.guard import RefereeSpace

    _, labels = blobs(300)
    run = auto_run(labels, n=300, screen_rows=200)
    referee_rows = np.arange(0, 300, 3)  # 100 rows: a draw regardless of them would keep about 67
    space = RefereeSpace(referee_rows, np.eye(3, dtype=np.float32)[labels[referee_rows]])
    sample = auto.screen_sample(dataclasses.replace(run, referee_spaces={"judge": space}))
    assert len(sample.vectors) == 200 and len(sample.referee_spaces["judge"].rows) == 100


def test_candidates_run_with_their_defaults_and_the_overrides_only():
    run = auto_run(blobs()[1])
    block = auto.candidate_block("temi", run.block.overrides["temi"])
    assert block.epochs == 2 and block.num_heads == 1
    assert block.beta == METHODS["temi"].params().beta  # a key not overridden keeps its default


@pytest.mark.parametrize(
    "block, message",
    [
        ({"candidates": ["deepcluster"]}, "'deepcluster' trains the encoder"),
        ({"candidates": ["kmeans"]}, "'kmeans' is not a method auto can fit; choose from"),
        ({"candidates": ["scan", "scan"]}, "names a method twice"),
        ({"candidates": ["scan"], "overrides": {"temi": {"epochs": 1}}}, "overrides.temi: 'temi' is not among"),
        ({"overrides": {"scan": {"epochz": 1}}}, "overrides.scan.epochz: Extra inputs"),
        ({"overrides": {"temi": {"hidden_dim": 8}}}, "overrides.temi: init_from_centroids=true needs hidden_dim=0"),
        ({"overrides": {"scan": {"train_backbone": True}}}, "overrides.scan: these settings train the encoder"),
        ({"screen_rows": 50}, "screen_rows=50 is invalid: Input should be greater than or equal to 200"),
    ],
)
def test_bad_candidates_are_refused_by_name(block, message):
    with pytest.raises(ParamsError, match=f"params: finetune.auto.*{message}"):
        load_section(FinetuneParams, {"finetune": {"method": "auto", "auto": block}})


def test_auto_through_the_stages_and_predict(tmp_path, stage_project):
    """On a slice of digits: the stage records every candidate's score and the pick, and predict sorts
    new images as the run did."""
    from PIL import Image

    from imageclust.data.prepared import load_prepared
    from imageclust.predict import Predictor
    from imageclust.tables import read_assignments

    project = stage_project(
        {
            "data.max_per_split": 60,
            "pretrain.method": "none",
            "extract.backbone": "pixels",
            "cluster.k": 4,
            "finetune.method": "auto",
            "finetune.auto.candidates": ["none", "temi"],
            "finetune.auto.overrides": FEW,
            "extract.referees": [{"backbone": "pixels", "image_size": 12}],
            "device": "cpu",
        }
    )
    project.run("check_params", "download", "pretrain", "extract", "extract_spaces", "cluster", "finetune")
    tuned = json.loads((tmp_path / "metrics/finetune.json").read_text())
    assert tuned["method"] == "auto" and tuned["chosen"] in ("none", "temi")
    assert set(tuned["candidate_scores"]) == {"none", "temi"}
    assert tuned["candidate_scores"][tuned["chosen"]] == max(tuned["candidate_scores"].values())
    assert tuned["judged_in"] == ["pixels_12"] and tuned["referee_spaces"] == 1  # judged in the referee alone

    shutil.copy(Path(__file__).resolve().parents[2] / "dvc.yaml", tmp_path / "dvc.yaml")
    prepared = load_prepared(tmp_path / "data/prepared")
    (tmp_path / "new").mkdir()
    for row in range(0, len(prepared.ids), 9):
        Image.fromarray(prepared.images[row][..., 0]).save(tmp_path / "new" / f"{prepared.ids[row]}.png")
    predicted = Predictor(tmp_path).predict(sorted((tmp_path / "new").iterdir()))
    final = read_assignments(tmp_path / "artifacts/finetune/assignments.parquet")
    by_id = dict(zip(final.ids, final.clusters))
    np.testing.assert_array_equal(predicted.clusters, [by_id[path.stem] for path in predicted.paths])


def test_each_candidate_logs_its_own_curves_from_step_0(tmp_path):
    """Candidates log to the stage's one DVCLive folder, each under its own name with its own steps from
    0, not after the previous candidate's epochs."""
    import dataclasses

    import pandas as pd

    from imageclust.finetune.base import Curves

    curves = Curves(tmp_path / "live")
    two = {**FEW, "scan": {"epochs": 3, "self_label_epochs": 0, "num_neighbors": 5}}
    run = dataclasses.replace(auto_run(blobs()[1], candidates=("temi", "scan"), overrides=two), curves=curves)
    METHODS["auto"].run(run)
    curves.close()
    metrics = tmp_path / "live" / "plots" / "metrics"
    temi, scan = (pd.read_csv(metrics / f"{name}/loss.tsv", sep="\t") for name in ("temi", "scan"))
    assert temi["step"].tolist() == [0, 1] and scan["step"].tolist() == [0, 1, 2]
