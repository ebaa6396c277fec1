"""The guard of the encoder-training methods: a labelling judged in the starting features, the best
epoch kept, the cluster stage's assignment as the floor."""

import dataclasses

import numpy as np
import pytest

from imageclust.finetune.guard import BestEpoch, Referee, RefereeSpace


def blobs_of(labels, seed, dim=8):
    """Features that hold ``labels`` as blobs."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(labels.max() + 1, dim)) * 4
    return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32)


def blobs(n=300, k=3, seed=0):
    labels = np.arange(n) % k
    return blobs_of(labels, seed), labels


def test_referee_prefers_the_clusters_the_features_hold():
    x, labels = blobs()
    referee = Referee(x, seed=0)
    shuffled = np.random.default_rng(1).permutation(labels)
    assert referee.score(labels) > 0.9  # kappa: linear classifiers predict the blobs on held-out rows
    assert abs(referee.score(shuffled)) < 0.15  # and a random labelling at chance
    assert referee.score(np.zeros_like(labels)) == -1.0  # one cluster: nothing to judge
    assert referee.score(labels + 5) == pytest.approx(referee.score(labels))  # names do not matter


def test_referee_scores_one_seeded_subsample():
    x, labels = blobs(n=500)
    a, b = Referee(x, seed=0, max_samples=200), Referee(x, seed=0, max_samples=200)
    assert len(a.rows) == 200 and np.array_equal(a.rows, b.rows)
    assert a.score(labels) == b.score(labels)


def test_best_epoch_keeps_the_start_unless_an_epoch_beats_it():
    x, labels = blobs()
    shuffled = np.random.default_rng(1).permutation(labels)
    best = BestEpoch.from_start(Referee(x, seed=0), labels)
    best.offer(0, shuffled, lambda: "epoch 0")
    best.offer(1, labels, lambda: "epoch 1")  # a tie does not replace the start
    assert best.kept_start and best.snapshot is None and len(best.scores) == 2
    stats = best.stats()
    assert stats["guard_kept_cluster_stage"] and stats["guard_best_epoch"] is None

    worse_start = BestEpoch.from_start(Referee(x, seed=0), shuffled)
    worse_start.offer(0, shuffled, lambda: "epoch 0")
    worse_start.offer(3, labels, lambda: "epoch 3")
    assert not worse_start.kept_start and worse_start.epoch == 3 and worse_start.snapshot == "epoch 3"
    restored = BestEpoch(Referee(x, seed=0))
    restored.restore(worse_start.state(), "epoch 3")
    assert restored.stats() == worse_start.stats()


def _run(x, initial):
    from fakes import frozen_run

    from imageclust.finetune.params import FinetuneParams

    return frozen_run(x, initial, np.ones(len(x), bool), 3, FinetuneParams(method="temi"), initial=initial)


def test_the_floor_keeps_the_cluster_stage_over_a_worse_clustering():
    from imageclust.finetune.base import FinetuneResult
    from imageclust.finetune.guard import floor

    x, labels = blobs()
    at_chance = np.random.default_rng(1).permutation(labels)
    worse = FinetuneResult(clusters=at_chance, confidence=np.ones(len(x), np.float32), model={"w": 1}, stats={"a": 1})
    kept = floor(_run(x, labels), worse)
    np.testing.assert_array_equal(kept.clusters, labels)
    assert kept.model == {"kept_cluster_stage": True}
    assert kept.stats["a"] == 1 and kept.stats["floor_kept_cluster_stage"]
    assert kept.stats["floor_score"] < kept.stats["floor_start_score"]
    # judged by the neighbour score, as auto judges by default (not the mean with the linear score)
    assert kept.stats["floor_score_name"] == "neighbour"
    referee = Referee(x, seed=0)
    assert kept.stats["floor_start_score"] == round(referee.score(labels), 4)
    assert kept.stats["floor_score"] == round(referee.score(at_chance), 4) != round(referee.judge(at_chance), 4)

    better = floor(_run(x, at_chance), FinetuneResult(clusters=labels, confidence=np.ones(len(x), np.float32)))
    np.testing.assert_array_equal(better.clusters, labels)
    assert not better.stats["floor_kept_cluster_stage"] and better.model == {}


def test_judge_is_the_mean_of_the_two_scores():
    x, labels = blobs()
    referee = Referee(x, seed=0)
    both = referee.judge(labels)
    assert both == pytest.approx((referee.judge(labels, "neighbour") + referee.judge(labels, "linear")) / 2)
    assert referee.judge(labels, "neighbour") == referee.score(labels) and referee.linear(labels) > 0.9


def test_with_more_spaces_a_labelling_is_judged_by_its_mean_score_over_them():
    x, labels = blobs()
    other = np.random.default_rng(2).permutation(labels)  # what a second space holds instead
    y = blobs_of(other, seed=3)
    both = Referee(x, seed=0, more_spaces=[y])
    assert both.spaces == 2 and Referee(x, seed=0).spaces == 1
    for labelling in (labels, other):
        alone = [Referee(x, seed=0), Referee(y, seed=0)]
        assert both.score(labelling) == pytest.approx(np.mean([r.score(labelling) for r in alone]))
        assert both.linear(labelling) == pytest.approx(np.mean([r.linear(labelling) for r in alone]))
    assert Referee(x, seed=0).score(labels) > 0.9 and Referee(y, seed=0).score(labels) < 0.15


def off_by_a_fifth():
    """The blobs, the cluster stage's run on them (their labels) and a method's result that moves a fifth
    of the rows to the next cluster: worse in the blobs' space, which holds the cluster stage's."""
    from imageclust.finetune.base import FinetuneResult

    x, labels = blobs()
    method = labels.copy()
    moved = np.random.default_rng(4).choice(len(labels), len(labels) // 5, replace=False)
    method[moved] = (method[moved] + 1) % 3
    return x, labels, _run(x, labels), FinetuneResult(clusters=method, confidence=np.ones(len(x), np.float32))


def test_the_floor_judges_in_every_space_the_run_was_given():
    from imageclust.finetune.guard import floor

    x, labels, run, result = off_by_a_fifth()
    method = result.clusters
    first_only = floor(run, result).stats
    assert first_only["floor_kept_cluster_stage"] and first_only["floor_spaces"] == 1

    more = {"second": blobs_of(method, seed=5), "third": blobs_of(method, seed=6)}  # both hold the method's
    every = floor(dataclasses.replace(run, more_spaces=more), result)
    assert not every.stats["floor_kept_cluster_stage"] and every.stats["floor_spaces"] == 3
    np.testing.assert_array_equal(every.clusters, method)
    referee = Referee(x, seed=0, more_spaces=list(more.values()))
    assert every.stats["floor_score"] == round(referee.score(method), 4)
    assert every.stats["floor_start_score"] == round(referee.score(labels), 4)
    assert every.stats["floor_scores"] == [round(v, 4) for v in referee.by_space(method)]


def test_with_more_spaces_the_floor_needs_the_method_judged_worse_in_every_one():
    from imageclust.finetune.guard import floor

    x, labels, run, result = off_by_a_fifth()
    method = result.clusters
    # better in one space of three, worse on average: the method stays
    mixed = {"second": blobs_of(method, seed=5), "third": blobs_of(labels, seed=6)}
    referee = Referee(x, seed=0, more_spaces=list(mixed.values()))
    assert referee.score(method) < referee.score(labels)
    stays = floor(dataclasses.replace(run, more_spaces=mixed), result).stats
    assert not stays["floor_kept_cluster_stage"] and stays["floor_score"] < stays["floor_start_score"]
    # worse in every space: the cluster stage's assignment is kept
    worse = {"second": blobs_of(labels, seed=5), "third": blobs_of(labels, seed=6)}
    gives_way = floor(dataclasses.replace(run, more_spaces=worse), result)
    assert gives_way.stats["floor_kept_cluster_stage"]
    np.testing.assert_array_equal(gives_way.clusters, labels)


def test_a_referee_space_judges_the_rows_it_holds_and_follows_a_cut():
    rng = np.random.default_rng(0)
    labels = np.arange(180) % 3
    rows = np.arange(0, 180, 2)  # the space holds every other row of the run
    space = RefereeSpace(rows, (np.eye(6)[labels[rows]] * 4 + rng.normal(scale=0.3, size=(90, 6))).astype(np.float32))
    near, linear = space.judge(labels, "neighbour"), space.judge(labels, "linear")
    assert near == 1.0 and linear > 0.9 and space.judge(labels, "both") == pytest.approx((near + linear) / 2)
    assert space.judge(np.zeros(180, int), "linear") == -1.0  # one cluster
    cut = space.cut(np.arange(60, 180))  # a screen keeps rows 60 to 179
    np.testing.assert_array_equal(cut.rows, np.arange(0, 120, 2))
    np.testing.assert_array_equal(cut.vectors, space.vectors[30:])
    assert cut.judge(labels[60:], "neighbour") == 1.0
