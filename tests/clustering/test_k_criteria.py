"""The scores of one candidate K against hand-computed values on tiny cases."""

import numpy as np
import pytest

from imageclust.clustering import k_criteria
from imageclust.clustering.choose_k import pick, runner_up


def stubs(own, transferred):
    """A method whose own clustering of the test half and whose transferred one are given."""
    return (lambda x, k, seed: np.array(own)), (lambda fitted, new, k, seed: np.array(transferred))


def test_prediction_strength_is_the_worst_test_clusters_share_of_pairs_kept_together():
    # test cluster 0 holds three points the training half's clustering splits 2 + 1: of its
    # 3 * 2 ordered pairs, 2 stay together; cluster 1 keeps its 2 points together (1.0); the worst is 1/3
    fit, transfer = stubs([0, 0, 0, 1, 1], [0, 0, 1, 1, 1])
    x = np.zeros((10, 2))
    assert k_criteria.prediction_strength(x, 2, fit, transfer, seed=0, repeats=1) == pytest.approx(1 / 3)


def test_instability_is_zero_when_the_halves_agree_up_to_names_and_near_one_for_noise():
    fit, transfer = stubs([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1])  # the same partition, renamed
    assert k_criteria.instability(np.zeros((12, 2)), 3, fit, transfer, seed=0) == 0.0
    rng = np.random.default_rng(0)
    own, other = rng.integers(3, size=500), rng.integers(3, size=500)
    fit, transfer = stubs(own, other)
    assert k_criteria.instability(np.zeros((1000, 2)), 3, fit, transfer, seed=0) == pytest.approx(1.0, abs=0.1)


def test_generalisation_kappa_is_one_for_separable_clusters_and_near_zero_for_random_ones():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 100)
    x = rng.normal(size=(300, 4)) * 0.1 + np.eye(4)[labels] * 5
    assert k_criteria.generalisation_kappa(x, labels, seed=0) == pytest.approx(1.0)
    assert abs(k_criteria.generalisation_kappa(x, rng.permutation(labels), seed=0)) < 0.15


def test_pick_follows_each_criterions_rule():
    curve = {2: 0.9, 3: 0.85, 4: 0.8, 5: 0.5}
    assert pick(curve, "silhouette", 0.8) == 2  # the highest
    assert pick(curve, "prediction_strength", 0.8) == 4  # the largest K at or over the threshold
    assert pick({2: 0.3, 3: 0.2}, "prediction_strength", 0.8) == 2  # none passes: the smallest
    assert pick({2: 0.0, 3: 0.0, 4: 0.2}, "stability", 0.8) == 3  # ties: the finest partition
    assert pick({2: 0.5, 3: 0.5}, "silhouette", 0.8) == 2  # ties: the coarser


def test_runner_up_and_its_margin():
    assert runner_up({2: 0.20, 3: 0.10, 4: 0.19}, "silhouette", 0.8) == (4, 0.1)  # (0.20 - 0.19) / (0.20 - 0.10)
    assert runner_up({2: 0.5, 3: 0.0, 4: 0.05, 5: 1.0}, "stability", 0.8) == (4, 0.05)  # the lowest wins
    assert runner_up({2: 1.0, 3: 0.9, 4: 0.72}, "prediction_strength", 0.8) == (4, 0.1)  # 0.08 / 0.8 either side
    assert runner_up({2: 1.0, 3: 0.84, 4: 0.5}, "prediction_strength", 0.8) == (4, 0.05)  # the chosen K barely passes
    assert runner_up({5: 0.3}, "silhouette", 0.8) == (None, None)


def test_generalisation_kappa_on_fewer_samples_than_dimensions():
    """72 photos of 1,280-d features (a small folder): the projection is no wider than the samples."""
    rng = np.random.default_rng(0)
    labels = np.arange(72) % 3
    x = rng.normal(size=(3, 1280))[labels] * 3 + rng.normal(size=(72, 1280))
    assert k_criteria.generalisation_kappa(x, labels, seed=0) > 0.9
