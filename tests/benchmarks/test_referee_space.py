"""benchmarks/referee_space.py: the picks and regrets of each rule, and the referee's rows in the draw's order."""

from __future__ import annotations

import types

import numpy as np

from benchmarks.referee_space import FITTED, REFEREES, Project, picks, summary, table


def test_each_rule_picks_its_best_candidate_and_the_mean_of_the_referees_too():
    acc = {"none": 0.45, "scan": 0.50, "turtle": 0.36}
    scores = {
        FITTED: {"none": 0.76, "scan": 0.72, "turtle": 0.77},  # picks the worst: regret 0.14
        "a@160": {"none": 0.62, "scan": 0.62, "turtle": 0.63},
        "b@224": {"none": 0.63, "scan": 0.66, "turtle": 0.62},
    }
    out = picks(acc, scores)
    assert out[FITTED] == {"pick": "turtle", "regret": 0.14}
    assert out["a@160"]["pick"] == "turtle" and out["b@224"] == {"pick": "scan", "regret": 0.0}
    assert out[REFEREES] == {"pick": "scan", "regret": 0.0}  # means 0.625, 0.64, 0.625


def test_with_three_referees_each_pair_is_a_rule_too():
    acc = {"none": 0.45, "scan": 0.50, "turtle": 0.36}
    scores = {
        FITTED: {"none": 0.76, "scan": 0.72, "turtle": 0.77},
        "a": {"none": 0.60, "scan": 0.62, "turtle": 0.64},
        "b": {"none": 0.63, "scan": 0.66, "turtle": 0.62},
        "c": {"none": 0.70, "scan": 0.60, "turtle": 0.60},
    }
    out = picks(acc, scores)
    assert list(out) == [FITTED, "a", "b", "c", "a + b", "a + c", "b + c", REFEREES]
    assert out["a + b"] == {"pick": "scan", "regret": 0.0}  # means 0.615, 0.64, 0.63
    assert out["a + c"]["pick"] == "none" and out["b + c"]["pick"] == "none"  # 0.65 / 0.61 / 0.62; 0.665 / 0.63 / 0.61
    assert out[REFEREES]["pick"] == "none"  # 0.643, 0.627, 0.62


def test_summary_and_table_over_cases():
    def case(seed, regret):
        rules = {FITTED: {"pick": "none", "regret": regret}, REFEREES: {"pick": "scan", "regret": 0.0}}
        acc = {"none": 0.5, "scan": 0.5, "temi": 0.4, "turtle": 0.4}
        return {"data": "d", "case": "balanced", "seed": seed, "acc": acc, "picks": rules}

    cases = [case(0, 0.02), case(1, 0.1)]
    report = {"cases": cases, "summary": summary(cases)}
    assert report["summary"][FITTED] == {"mean_regret": 0.06, "worst_regret": 0.1}
    lines = table(report).splitlines()
    assert len(lines) == 2 + 2 + 1 and lines[-1].endswith("| 0.060 (0.100) | 0.000 (0.000) |")


def test_referee_embedding_keeps_the_draws_order():
    # A draw lists rows out of the prepared order; the pixels backbone shows which image each row got.
    images = np.arange(5, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), dtype=np.uint8)
    project = Project.__new__(Project)
    project.prepared = types.SimpleNamespace(images=images)
    project.pixel_rows = np.array([3, 0, 4, 1, 2])  # feature row -> prepared row
    rows = np.array([2, 0, 3])  # feature rows 2, 0, 3: prepared images 4, 3, 1
    vectors = project.embed("pixels@native", rows)
    np.testing.assert_allclose(vectors[:, 0] * 255, [4, 3, 1], atol=1e-4)


def test_further_spaces_go_to_the_candidates_and_the_fitted_rule_averages_over_them(monkeypatch):
    """``--space``: embedded for the draw, handed to the candidates (TURTLE's heads), and the fitted-space
    rule is the mean of the neighbour scores in the project's features and in it, as auto judges."""
    from benchmarks import referee_space
    from imageclust.labelfree import neighbour_kappa

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    project = Project.__new__(Project)
    project.labels = labels
    project.vectors = (rng.normal(size=(60, 4)) + 6 * labels[:, None]).astype(np.float32)  # the classes apart
    embedded = {"s@1": rng.normal(size=(60, 4)).astype(np.float32), "r@1": rng.normal(size=(60, 3)).astype(np.float32)}
    project.embed = lambda space, rows: embedded[space][rows]
    handed = {}

    def fake_candidates(project_, rows, labels_, seed, more_spaces):
        handed.update(more_spaces)
        return {"none": labels_, "scan": rng.integers(0, 2, len(rows))}

    monkeypatch.setattr(referee_space, "candidates", fake_candidates)
    out = referee_space.run_case(project, np.arange(60), ["r@1"], 0, ["s@1"])
    assert list(handed) == ["s@1"]
    np.testing.assert_array_equal(handed["s@1"], embedded["s@1"])
    fitted = np.mean([neighbour_kappa(z, labels, seed=0) for z in (project.vectors, embedded["s@1"])])
    assert out["scores"][FITTED]["none"] == round(float(fitted), 4)
    assert out["scores"]["r@1"]["none"] == round(neighbour_kappa(embedded["r@1"], labels, seed=0), 4)
    assert set(out["scores"]) == {FITTED, "r@1"}  # a further space is fitted in, not a referee
