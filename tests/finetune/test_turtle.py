"""TURTLE: its losses by hand, one outer step, the projection, training on features, the generalisation
score, assigning new samples, and resuming."""

import math

import numpy as np
import pytest
import torch
from fakes import Recorder, killed_at, sphere_blobs

from imageclust.finetune.base import CHECKPOINT_FILE, Curves, FinetuneRun
from imageclust.finetune.params import FinetuneParams
from imageclust.finetune.projection import SpaceProjection, components_kept
from imageclust.finetune.registry import METHODS
from imageclust.finetune.turtle import (
    STEPS_PER_ROW,
    Params,
    TaskEncoder,
    assign_turtle,
    finetune_turtle,
    train_task_encoder,
)
from imageclust.io import load_torch
from imageclust.labelfree import generalisation_score
from imageclust.losses.turtle import task_labels, turtle_inner_loss, turtle_outer_loss
from imageclust.metrics import clustering_accuracy

TINY = dict(outer_steps=40, inner_steps=3, restarts=2, pca_dim=8, score_folds=3, score_samples=200)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_run(x, labels, turtle=None, initial=None, **kwargs):
    n = len(x)
    params = FinetuneParams(method="turtle", turtle={**TINY, **(turtle or {})}, checkpoint_every=1)
    return FinetuneRun(
        vectors=x,
        labels=labels,
        train=kwargs.pop("train", np.ones(n, dtype=bool)),
        initial_clusters=labels if initial is None else initial,
        initial_confidence=np.ones(n, dtype=np.float32),
        num_clusters=3,
        params=params,
        seed=0,
        device=torch.device("cpu"),
        curves=kwargs.pop("curves", Recorder()),
        **kwargs,
    )


# ---------------------------------------------------------------- the losses, by hand


def test_task_labels_are_the_mean_of_each_spaces_softmax():
    a = torch.tensor([[0.0, math.log(3.0)]])  # softmax (1/4, 3/4)
    b = torch.tensor([[math.log(3.0), 0.0]])  # softmax (3/4, 1/4)
    labels, per_space = task_labels([a, b])
    torch.testing.assert_close(labels, torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(per_space[0], torch.tensor([[0.25, 0.75]]))


def test_outer_loss_by_hand():
    # one space, two samples, two clusters
    labels = torch.tensor([[0.8, 0.2], [0.4, 0.6]], requires_grad=True)
    inner = [torch.tensor([[math.log(0.9), math.log(0.1)], [math.log(0.3), math.log(0.7)]], requires_grad=True)]
    loss, error, entropy = turtle_outer_loss(inner, labels, [labels], gamma=2.0)
    # cross-entropy of the inner predictions against the labels, averaged over the samples
    expected_error = -(0.8 * math.log(0.9) + 0.2 * math.log(0.1) + 0.4 * math.log(0.3) + 0.6 * math.log(0.7)) / 2
    expected_entropy = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))  # the mean labels are (0.6, 0.4)
    assert error.item() == pytest.approx(expected_error, rel=1e-6)
    assert entropy.item() == pytest.approx(expected_entropy, rel=1e-6)
    assert loss.item() == pytest.approx(expected_error - 2.0 * expected_entropy, rel=1e-6)
    assert expected_error == pytest.approx(0.6202, abs=1e-4) and expected_entropy == pytest.approx(0.6730, abs=1e-4)
    loss.backward()
    assert inner[0].grad is None  # eq. 13: the inner predictions are constants of the outer step
    # d error / d label = -log q / n; d entropy / d label = -(log mean + 1) / n
    grad = -torch.log(torch.tensor([[0.9, 0.1], [0.3, 0.7]])) / 2 + 2.0 * (torch.log(torch.tensor([0.6, 0.4])) + 1) / 2
    torch.testing.assert_close(labels.grad, grad)


def test_inner_loss_trains_the_classifiers_only():
    labels = torch.tensor([[0.8, 0.2]], requires_grad=True)
    logits = torch.tensor([[0.0, 0.0]], requires_grad=True)
    loss = turtle_inner_loss([logits, logits * 2], labels)
    assert loss.item() == pytest.approx(2 * math.log(2), rel=1e-6)
    loss.backward()
    assert labels.grad is None and logits.grad is not None


def test_the_entropy_term_is_summed_over_spaces():
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # one space uses one cluster: entropy 0
    even = torch.tensor([[0.5, 0.5], [0.5, 0.5]])  # the other both: log 2
    inner = [torch.zeros(2, 2), torch.zeros(2, 2)]
    _, _, entropy = turtle_outer_loss(inner, (probs + even) / 2, [probs, even], gamma=1.0)
    assert entropy.item() == pytest.approx(math.log(2), rel=1e-6)


# ---------------------------------------------------------------- the pieces


def test_one_outer_step_moves_the_task_encoder_and_logs_a_row():
    x, _ = sphere_blobs(n=60, d=8)
    z = torch.from_numpy(x)
    p = Params(outer_steps=1, inner_steps=2, init="random")
    torch.manual_seed(0)
    rows = []
    encoder = train_task_encoder([z], 3, p, torch.Generator().manual_seed(0), lambda *a: rows.append(a[:2]))
    torch.manual_seed(0)
    untouched = TaskEncoder([8], 3)
    assert not torch.equal(encoder.heads[0].weight, untouched.heads[0].weight)
    assert len(rows) == 1 and rows[0][0] == 1
    assert sorted(rows[0][1]) == ["turtle/clusters_used", "turtle/entropy", "turtle/error", "turtle/loss"]
    assert all(math.isfinite(v) for v in rows[0][1].values())


def test_start_at_gives_the_nearest_mean_assignment():
    x, labels = sphere_blobs(n=60, d=8)
    z = torch.from_numpy(x)
    encoder = TaskEncoder([8], 3)
    clusters = torch.as_tensor((labels + 1) % 3)
    encoder.start_at([z], clusters, sharpness=4.0)
    with torch.no_grad():
        probs = encoder([z])[0]
    np.testing.assert_array_equal(probs.argmax(1).numpy(), clusters.numpy())


def test_projection_is_fitted_on_the_given_rows_and_applies_to_new_ones():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    whitened = SpaceProjection.fit(x, 4, whiten=True, seed=0)
    z = whitened(x)
    assert z.shape == (50, 4)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.var(0, ddof=1), 1, rtol=1e-4)
    plain = SpaceProjection.fit(x, 4, whiten=False, seed=0)(x)
    assert plain.var(0, ddof=1).mean() == pytest.approx(1, rel=1e-4) and plain.var(0).std() > 0.01
    again = SpaceProjection.from_tensors(whitened.to_tensors())
    np.testing.assert_allclose(again(x[:3] * 5), z[:3], rtol=1e-4, atol=1e-5)  # rows are L2-normalised first


@pytest.mark.parametrize(
    ("pca_dim", "rows_per_component", "rows", "expected"),
    [
        (256, 25, 100_000, 256),  # many rows: pca_dim alone
        (256, 25, 1_500, 60),  # one component per 25 rows
        (256, 25, 100, 10),  # never fewer than K (10)
        (None, 25, 1_500, 60),
        (256, None, 1_500, 256),
        (None, None, 1_500, None),
    ],
)
def test_components_kept_fall_with_the_rows(pca_dim, rows_per_component, rows, expected):
    p = Params(pca_dim=pca_dim, rows_per_component=rows_per_component)
    assert components_kept(p, rows, num_clusters=10) == expected


def test_a_run_on_few_rows_keeps_one_component_per_rows_per_component():
    x, labels = sphere_blobs(n=150, d=32)
    result = finetune_turtle(make_run(x, labels, turtle={"pca_dim": 16, "rows_per_component": 30, "restarts": 1}))
    assert result.stats["components"] == [5]  # 150 rows / 30
    assert result.model["projections"][0]["components"].shape == (32, 5)


def test_generalisation_score_ranks_a_linear_clustering_above_a_random_one():
    x, labels = sphere_blobs(n=150, d=8)
    rng = np.random.default_rng(0)
    good = generalisation_score([x], labels, folds=3)
    bad = generalisation_score([x], rng.integers(0, 3, len(x)), folds=3)
    assert good == 1.0 and bad < 0.6
    assert generalisation_score([x], np.zeros(len(x), dtype=int)) == 0.0  # one cluster generalises nothing
    assert generalisation_score([x, x[:, ::-1].copy()], labels, folds=3) == 1.0  # averaged over spaces


# ---------------------------------------------------------------- the method


def test_finetune_turtle_recovers_the_blobs_from_random_starts():
    assert METHODS["turtle"].run is finetune_turtle
    x, labels = sphere_blobs(n=90, d=16)
    initial = np.zeros(len(x), dtype=np.int64)  # unused: every start is random
    result = finetune_turtle(make_run(x, labels, dict(init="random", outer_steps=100, outer_lr=0.05), initial))
    assert clustering_accuracy(labels, result.clusters) == 1.0
    scores = result.stats["neighbour_scores"]  # restart_score: neighbour, the default
    assert len(scores) == 2 and result.stats["best_restart"] == int(np.argmax(scores))
    assert len(result.stats["generalisation_scores"]) == 2 and result.stats["restart_score"] == "neighbour"


@pytest.mark.parametrize("restart_score, kept", [("neighbour", 1), ("generalisation", 0)])
def test_restarts_are_ranked_by_the_chosen_score(monkeypatch, restart_score, kept):
    """The two scores disagree (generalisation prefers restart 0, neighbour restart 1): the chosen one
    decides which restart's heads label the rows."""
    import imageclust.finetune.turtle as turtle

    real_scored_labels = turtle.scored_labels
    generalisation, neighbour = iter([0.9, 0.5]), iter([0.1, 0.8])
    fitted = []

    def scored_labels(encoder, spaces, p, seed):
        fitted.append(encoder.plain_weights())
        return real_scored_labels(encoder, spaces, p, seed)[0], next(generalisation)

    monkeypatch.setattr(turtle, "scored_labels", scored_labels)
    monkeypatch.setattr(turtle.Referee, "score", lambda self, clusters: next(neighbour))
    x, labels = sphere_blobs(n=90, d=16)
    result = finetune_turtle(make_run(x, labels, dict(init="random", restart_score=restart_score)))
    assert result.stats["best_restart"] == kept
    assert result.stats["generalisation_scores"] == [0.9, 0.5] and result.stats["neighbour_scores"] == [0.1, 0.8]
    kept_weight = fitted[kept][0]["weight"]
    assert torch.equal(result.model["heads"][0]["weight"], kept_weight)


def test_finetune_turtle_logs_curves_and_predicts_every_row(tmp_path):
    x, labels = sphere_blobs(n=90, d=16)
    train = np.ones(90, dtype=bool)
    train[::5] = False  # some rows are only predicted
    curves = Curves(tmp_path / "live")
    result = finetune_turtle(make_run(x, labels, train=train, curves=curves))
    curves.close()
    assert result.clusters.shape == (90,) and result.stats["train_samples"] == 72
    assert clustering_accuracy(labels, result.clusters) == 1.0
    assert len(curves.history) == 2 * math.ceil(TINY["outer_steps"] / STEPS_PER_ROW)
    assert [row["turtle/restart"] for row in curves.history] == [0.0, 0.0, 1.0, 1.0]
    assert (tmp_path / "live" / "plots" / "metrics" / "turtle" / "loss.tsv").exists()
    # predict: the saved model assigns rows as the run did
    clusters, confidence, distance = assign_turtle(
        {**result.model, "num_clusters": 3}, x[::7] * 3.0
    )  # a row's length does not matter: rows are L2-normalised first
    np.testing.assert_array_equal(clusters, result.clusters[::7])
    np.testing.assert_allclose(confidence, result.confidence[::7], rtol=1e-5)
    assert (distance >= 0).all()


def test_finetune_turtle_is_seeded():
    x, labels = sphere_blobs(n=60, d=8)
    a = finetune_turtle(make_run(x, labels))
    b = finetune_turtle(make_run(x, labels))
    np.testing.assert_array_equal(a.confidence, b.confidence)


@pytest.mark.parametrize("warm_start", [True, False])
def test_resumed_run_matches_uninterrupted_run(tmp_path, warm_start):
    x, labels = sphere_blobs(n=60, d=8)
    turtle = dict(outer_steps=60, warm_start=warm_start)

    def run(name):
        return make_run(x, labels, turtle, checkpoint_dir=tmp_path / name, run_id="same", curves=Recorder())

    whole = run("whole")
    expected = finetune_turtle(whole)

    killed = killed_at(run("killed"), 4)  # in the second restart
    with pytest.raises(KeyboardInterrupt):
        finetune_turtle(killed)
    assert load_torch(tmp_path / "killed" / CHECKPOINT_FILE)["epoch"] == 4

    resumed = run("killed")
    result = finetune_turtle(resumed)
    np.testing.assert_array_equal(result.confidence, expected.confidence)
    assert result.stats == expected.stats
    assert resumed.curves.history == whole.curves.history


def test_a_second_space_is_fitted_with_its_own_head_and_assigns_new_rows():
    """The extract stage's features hold no classes here (noise); the second space does: TURTLE finds
    them through its head, and assigns new rows from the features of both spaces."""
    blobs, labels = sphere_blobs(n=90, d=16)
    noise = np.random.default_rng(1).normal(size=(90, 4)).astype(np.float32)
    random_start = dict(init="random", outer_steps=100, outer_lr=0.05)
    alone = finetune_turtle(make_run(noise, labels, random_start, np.zeros(90, dtype=np.int64)))
    both = finetune_turtle(
        make_run(noise, labels, random_start, np.zeros(90, dtype=np.int64), more_spaces={"blobs": blobs})
    )
    assert clustering_accuracy(labels, alone.clusters) < 0.7
    assert clustering_accuracy(labels, both.clusters) >= 0.95  # the noise head still pulls a little
    assert both.model["spaces"] == ["blobs"] and len(both.model["heads"]) == 2
    model = {**both.model, "num_clusters": 3}
    clusters, confidence, _ = assign_turtle(model, [noise[::7], blobs[::7]])
    np.testing.assert_array_equal(clusters, both.clusters[::7])
    np.testing.assert_allclose(confidence, both.confidence[::7], rtol=1e-5)
    with pytest.raises(ValueError, match="fitted on 2 spaces, given 1"):
        assign_turtle(model, noise[::7])
