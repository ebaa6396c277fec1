"""finetune.size_prior: the sizes SCAN, TEMI and TURTLE expect, from the cluster stage's when they are unequal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import frozen_run, sphere_blobs

from imageclust.finetune.params import FinetuneParams
from imageclust.finetune.registry import METHODS
from imageclust.finetune.size_prior import SMOOTHING, UNEQUAL_CV, size_prior

TINY = {
    "scan": dict(epochs=2, self_label_epochs=1, num_heads=2, hidden_dim=16),
    "temi": dict(epochs=2, num_heads=2, hidden_dim=16, num_neighbors=5, init_from_centroids=False),
    "turtle": dict(outer_steps=20, inner_steps=2, restarts=1, pca_dim=8, score_folds=2, score_samples=100),
}


def run_with(initial: np.ndarray, choice: str, method: str = "scan", x=None, labels=None, **shared):
    if x is None:
        x, labels = sphere_blobs(n=len(initial))
    params = FinetuneParams(method=method, size_prior=choice, floor=False, **shared, **{method: TINY[method]})
    return frozen_run(x, labels, np.ones(len(x), dtype=bool), 3, params, initial=initial)


EQUAL = np.arange(90) % 3
UNEQUAL = np.repeat([0, 1, 2], [70, 15, 5])  # shares 0.78, 0.17, 0.06: coefficient of variation about 0.9


def test_auto_keeps_the_uniform_prior_for_equal_sizes_and_takes_unequal_ones():
    assert size_prior(run_with(EQUAL, "auto")) == (None, {"size_prior": "uniform", "cluster_stage_size_cv": 0.0})
    prior, stats = size_prior(run_with(UNEQUAL, "auto"))
    assert stats["size_prior"] == "clusters" and stats["cluster_stage_size_cv"] > UNEQUAL_CV
    shares = np.array([70, 15, 5]) / 90
    np.testing.assert_allclose(prior.numpy(), (1 - SMOOTHING) * shares + SMOOTHING / 3, rtol=1e-6)
    assert prior.sum().item() == pytest.approx(1.0)


def test_a_chosen_prior_is_used_whatever_the_sizes():
    assert size_prior(run_with(UNEQUAL, "uniform"))[0] is None
    prior, stats = size_prior(run_with(EQUAL, "clusters"))
    assert stats["size_prior"] == "clusters"
    torch.testing.assert_close(prior, torch.full((3,), 1 / 3))


def test_long_tail_falls_geometrically_by_the_ratio_whatever_the_cluster_stage_says():
    prior, stats = size_prior(run_with(EQUAL, "long_tail", imbalance_ratio=4.0))
    # ratio 4 over 3 clusters: 1, 1/2, 1/4, summed to 1
    np.testing.assert_allclose(prior.numpy(), [4 / 7, 2 / 7, 1 / 7], rtol=1e-6)
    assert stats == {"size_prior": "long_tail", "imbalance_ratio": 4.0, "cluster_stage_size_cv": 0.0}
    flat, _ = size_prior(run_with(UNEQUAL, "long_tail", imbalance_ratio=1.0))
    torch.testing.assert_close(flat, torch.full((3,), 1 / 3))


def test_an_imbalance_ratio_below_one_is_refused_by_name():
    with pytest.raises(ValueError, match="imbalance_ratio"):
        FinetuneParams(method="scan", size_prior="long_tail", imbalance_ratio=0.5)


def test_noise_and_test_rows_do_not_count():
    run = run_with(np.where(np.arange(90) < 30, -1, EQUAL), "auto")
    run.train[:45] = False
    assert size_prior(run)[1]["cluster_stage_size_cv"] == pytest.approx(
        float(np.std(np.bincount(EQUAL[45:]) / 45) / (1 / 3)), abs=1e-4
    )


@pytest.mark.parametrize("choice", ["auto", "long_tail"])
@pytest.mark.parametrize("method", ["scan", "temi", "turtle"])
def test_every_method_with_a_size_term_runs_with_a_prior_and_says_so(method, choice):
    torch.manual_seed(0)
    x, labels = sphere_blobs(n=90)
    keep = np.concatenate([np.flatnonzero(labels == c)[:size] for c, size in zip(range(3), (30, 12, 6))])
    x, labels = x[keep], labels[keep]  # class sizes 30, 12, 6
    result = METHODS[method].run(run_with(labels.copy(), choice, method, x, labels, imbalance_ratio=5.0))
    assert result.stats["size_prior"] == ("clusters" if choice == "auto" else "long_tail")
    assert len(result.clusters) == len(x)
    assert np.isfinite(result.confidence).all()


def test_auto_takes_no_sizes_from_a_partition_with_an_empty_cluster():
    one_cluster = np.zeros(90, dtype=np.int64)  # a degenerate start: its sizes are no estimate
    assert size_prior(run_with(one_cluster, "auto"))[1]["size_prior"] == "uniform"
