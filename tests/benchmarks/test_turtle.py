"""The TURTLE benchmark's measurement: the restart the generalisation score picks, and its ACC."""

import numpy as np
import pytest
from fakes import sphere_blobs

from benchmarks import turtle
from imageclust.finetune.turtle import Params as TurtleParams


def test_measure_scores_every_restart_and_reports_the_picked_one():
    x, labels = sphere_blobs(n=90, d=8)
    fit = np.arange(90) % 5 != 0
    initial = turtle.kmeans_start(x, fit, 3, seed=0)
    result = turtle.measure([x], labels, fit, ~fit, initial, 3, {"outer_steps": 20, "restarts": 2, "pca_dim": 4}, 0)
    scores = [r["generalisation_score"] for r in result["restarts"]]
    assert len(scores) == 2 and result["picked_restart"] == int(np.argmax(scores))
    assert result["acc"] == result["restarts"][result["picked_restart"]]["acc"] == 1.0


def test_measure_takes_further_spaces():
    x, labels = sphere_blobs(n=90, d=8)
    fit = np.arange(90) % 5 != 0
    initial = turtle.kmeans_start(x, fit, 3, seed=0)
    other = np.random.default_rng(0).normal(size=(90, 3)).astype(np.float32)  # a space without the classes
    one = turtle.measure([x], labels, fit, ~fit, initial, 3, {"outer_steps": 20, "restarts": 1, "pca_dim": 4}, 0)
    two = turtle.measure([x, other], labels, fit, ~fit, initial, 3, {"outer_steps": 20, "restarts": 1, "pca_dim": 4}, 0)
    assert one["restarts"][0]["generalisation_score"] != two["restarts"][0]["generalisation_score"]


def test_a_setting_s_size_prior_is_the_finetune_stage_s_estimate_from_the_start(monkeypatch):
    from imageclust.finetune import turtle as method

    x, labels = sphere_blobs(n=90, d=8)
    fit = np.arange(90) % 5 != 0
    initial = np.repeat([0, 1, 2], [60, 20, 10])  # fitted rows: 48, 16 and 8
    priors = []
    real = method.fit_restart
    monkeypatch.setattr(method, "fit_restart", lambda *a, prior=None, **k: priors.append(prior) or real(*a, **k))
    knobs = {"outer_steps": 5, "restarts": 1, "pca_dim": 4}
    turtle.measure([x], labels, fit, ~fit, initial, 3, {**knobs, "size_prior": "clusters"}, 0)
    turtle.measure([x], labels, fit, ~fit, initial, 3, knobs, 0)
    np.testing.assert_allclose(priors[0].numpy(), 0.9 * np.array([48, 16, 8]) / 72 + 0.1 / 3, rtol=1e-6)
    assert priors[1] is None
    with pytest.raises(SystemExit, match="size_prior='power'"):
        turtle.measure([x], labels, fit, ~fit, initial, 3, {**knobs, "size_prior": "power"}, 0)


def test_labelling_scores_rank_the_classes_above_a_random_labelling():
    x, labels = sphere_blobs(n=90, d=8)
    fit = np.arange(90) % 5 != 0
    noise = np.random.default_rng(0).integers(0, 3, size=90)
    p = TurtleParams(pca_dim=4)
    scores = turtle.labelling_scores([x], fit, {"classes": labels + 7, "noise": noise}, 3, p, seed=0)
    assert scores["classes"]["generalisation_score"] == 1.0
    assert scores["classes"]["neighbour_score"] > 0.9 > 0.3 > scores["noise"]["neighbour_score"]
    assert scores["noise"]["generalisation_score"] < 0.7


def test_settings_are_parsed_as_yaml_and_a_bad_one_names_itself():
    assert turtle.parse_setting("default") == {}
    assert turtle.parse_setting("outer_lr=0.03 pca_dim=null warm_start=false") == {
        "outer_lr": 0.03,
        "pca_dim": None,
        "warm_start": False,
    }
    with pytest.raises(SystemExit, match="'outer_lr' is not key=value"):
        turtle.parse_setting("outer_lr 0.03")
