"""DeepCluster: the uniform sampler, empty-cluster re-seeding, the supervised contrastive loss, one
run of each variant on tiny images, resuming after a kill, and the finetune stage's outputs."""

import math

import numpy as np
import pytest
import torch
from conftest import three_shapes

from imageclust.finetune.base import CHECKPOINT_FILE, FinetuneRun
from imageclust.finetune.deepcluster import finetune_deepcluster
from imageclust.finetune.params import FinetuneParams
from imageclust.finetune.pseudo_labels import (
    ClusterSpace,
    reseed_empty_clusters,
    training_clusters,
    uniform_cluster_sampler,
)
from imageclust.finetune.registry import METHODS
from imageclust.finetune.stage import ENCODER_FILE
from imageclust.io import load_torch
from imageclust.losses.contrastive import supervised_contrastive
from imageclust.metrics import clustering_accuracy
from imageclust.models.encoder import load_encoder


@pytest.fixture(autouse=True)
def no_dvc_repo(monkeypatch):
    import dvclive.live

    monkeypatch.setattr(dvclive.live, "get_dvc_repo", lambda: None)


# ---------------------------------------------------------------- the sampler and re-seeding


def test_uniform_sampler_draws_each_cluster_equally():
    labels = np.array([0] * 10 + [1] * 2 + [3] * 4)  # cluster 2 is empty
    drawn = uniform_cluster_sampler(labels, 16, np.random.default_rng(0))
    assert len(drawn) == 16
    # 16 // 3 + 1 = 6 per non-empty cluster, 18 in all, cut to 16 after shuffling: 4 to 6 each
    counts = np.bincount(labels[drawn], minlength=4)
    assert counts[2] == 0 and counts.sum() == 16 and counts[[0, 1, 3]].min() >= 4
    assert len(set(drawn[labels[drawn] == 0])) == counts[0]  # a large cluster: without replacement
    assert set(drawn[labels[drawn] == 1]) <= {10, 11}  # a small one: with replacement


def test_uniform_sampler_by_hand():
    # two clusters of sizes 1 and 3, size 4: 4 // 2 + 1 = 3 each -> [0, 0, 0] and 3 of {1, 2, 3}
    drawn = uniform_cluster_sampler(np.array([0, 1, 1, 1]), 4, np.random.default_rng(1))
    full = np.concatenate([[0, 0, 0], [1, 2, 3]])
    assert len(drawn) == 4 and set(drawn) <= set(full)
    assert (drawn == 0).sum() >= 1 and len(set(drawn[drawn > 0])) == (drawn > 0).sum()


def test_reseed_empty_cluster_splits_a_donor():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [5.0, 5.1], [4.9, 5.0]])
    labels = np.array([0, 0, 1, 1, 1, 1])
    centroids = np.array([[0.05, 0.0], [5.0, 5.05], [9.0, 9.0]])  # cluster 2 got no point
    new_labels, new_centroids, reseeded = reseed_empty_clusters(x, labels, centroids, np.random.default_rng(0))
    assert reseeded == 1 and (np.bincount(new_labels, minlength=3) > 0).all()
    # the empty cluster took part of one donor's points, and the donor's centre, perturbed
    moved = np.flatnonzero(new_labels != labels)
    donor = labels[moved[0]]
    assert (labels[moved] == donor).all() and (new_labels[moved] == 2).all()
    assert 0 < len(moved) < (labels == donor).sum()
    assert np.abs(new_centroids[2] - centroids[donor]).max() < 1e-3


def test_reseed_splits_identical_points_in_half():
    x = np.zeros((4, 2))
    labels = np.zeros(4, dtype=np.int64)
    new_labels, _, reseeded = reseed_empty_clusters(x, labels, np.zeros((2, 2)), np.random.default_rng(0))
    assert reseeded == 1 and sorted(np.bincount(new_labels)) == [2, 2]


def test_nothing_to_reseed():
    labels = np.array([0, 1, 1])
    new_labels, centroids, reseeded = reseed_empty_clusters(
        np.eye(3)[:, :2], labels, np.eye(2), np.random.default_rng(0)
    )
    assert reseeded == 0 and (new_labels == labels).all() and (centroids == np.eye(2)).all()


def test_cluster_space_whitens_and_normalises():
    x = np.random.default_rng(0).normal(size=(50, 6)) * [10, 1, 1, 1, 1, 1]
    space = ClusterSpace(x, 3, True, 0)
    z = space(x)
    assert z.shape == (50, 3)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    t = space.to_tensors()
    by_hand = (x - t["pca_mean"].numpy()) @ t["pca_components"].numpy().T / t["pca_scale"].numpy()
    by_hand /= np.linalg.norm(by_hand, axis=1, keepdims=True)
    np.testing.assert_allclose(by_hand, z, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the supervised contrastive loss


def test_supervised_contrastive_by_hand():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    t = 0.5
    # sample 0: positive 1 (cos 1), other 2 (cos 0); sample 2 has no positive and is left out
    l0 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(0)))
    assert supervised_contrastive(z, labels, t).item() == pytest.approx(l0, rel=1e-6)
    assert supervised_contrastive(z, torch.tensor([0, 1, 2]), t).item() == 0.0  # no positives at all


def test_supervised_contrastive_averages_over_positives():
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 0])
    t = 1.0
    sim = (z @ z.t()).numpy()
    expected = []
    for i in range(3):
        others = [j for j in range(3) if j != i]
        denominator = sum(math.exp(sim[i, j] / t) for j in others)
        expected.append(np.mean([-math.log(math.exp(sim[i, j] / t) / denominator) for j in others]))
    assert supervised_contrastive(z, labels, t).item() == pytest.approx(float(np.mean(expected)), rel=1e-5)


# ---------------------------------------------------------------- runs on tiny images


def deepcluster_params(**block) -> FinetuneParams:
    return FinetuneParams(
        method="deepcluster",
        batch_size=16,
        checkpoint_every=1,
        # a random encoder: no guard unless a test asks (its starting features judge nothing)
        deepcluster={"epochs": 2, "pca_dim": 4, "augment": "none", "guard": False, **block},
    )


@pytest.mark.parametrize("contrastive", ["none", "head", "views"])
def test_deepcluster_runs_each_variant(image_run, contrastive):
    params = deepcluster_params(contrastive=contrastive)
    assert METHODS["deepcluster"].run is finetune_deepcluster and params.trains_encoder
    run = image_run(params)
    before = {k: v.clone() for k, v in load_encoder(run.encoder_path)[0].state_dict().items()}
    result = finetune_deepcluster(run)
    assert result.clusters.shape == (60,) and set(result.clusters) <= {0, 1, 2}
    assert ((result.confidence > 0) & (result.confidence <= 1)).all()
    trained = result.encoder.state_dict()
    assert any(not torch.equal(before[k], trained[k]) for k in before)  # the encoder was trained
    assert result.model["centroids"].shape == (3, 4) and result.model["pca_components"].shape == (4, 8)
    assert result.stats["train_samples"] == 48 and result.stats["contrastive"] == contrastive


def test_deepcluster_with_faiss_and_reassigning_every_other_epoch(image_run):
    result = finetune_deepcluster(
        image_run(deepcluster_params(kmeans_backend="faiss", reassign_every=2, epochs=3, pca_dim=None))
    )
    assert result.model["centroids"].shape == (3, 8) and "pca_components" not in result.model


def test_deepcluster_over_clusters_while_training_and_ends_with_k(image_run):
    result = finetune_deepcluster(image_run(deepcluster_params(num_clusters=6)))
    assert result.stats["train_k"] == 6 and result.model["top"]["weight"].shape[0] == 6
    assert result.model["centroids"].shape[0] == 3 and set(result.clusters) <= {0, 1, 2}


def test_training_clusters_over_cluster_ten_times_within_the_data():
    assert training_clusters(10, 70_000) == 100  # the paper's ratio
    assert training_clusters(10, 500) == 50  # at least ten images per cluster on average
    assert training_clusters(3, 12) == 3  # never fewer than K
    assert training_clusters(10, 70_000, requested=25) == 25


def test_deepcluster_over_clusters_by_default(image_run):
    result = finetune_deepcluster(image_run(deepcluster_params()))  # 48 training images, K = 3
    assert result.stats["train_k"] == 4 and result.model["centroids"].shape[0] == 3


def test_deepcluster_finds_the_shapes(image_run):
    result = finetune_deepcluster(image_run(deepcluster_params(epochs=3)))
    assert clustering_accuracy(three_shapes()[1], result.clusters) >= 0.9


@pytest.mark.parametrize("guard", [False, True])
def test_deepcluster_resumes_after_a_kill_as_if_never_stopped(image_run, tmp_path, monkeypatch, guard):
    params = deepcluster_params(epochs=3, contrastive="views", guard=guard)

    def run_of(params, **kwargs):
        run = image_run(params, **kwargs)
        if guard:  # a start at chance, so that the guard keeps an epoch's network
            run.initial_clusters = np.random.default_rng(0).permutation(run.initial_clusters)
        return run

    uninterrupted = finetune_deepcluster(run_of(params))
    assert not uninterrupted.stats.get("guard_kept_cluster_stage")

    original = FinetuneRun.end_epoch

    def killed_after_epoch_two(self, epoch, total, row, state, last=False):
        original(self, epoch, total, row, state, last)
        if epoch == 1:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(FinetuneRun, "end_epoch", killed_after_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        finetune_deepcluster(run_of(params, checkpoint_dir=tmp_path / "ckpt"))
    monkeypatch.setattr(FinetuneRun, "end_epoch", original)
    assert load_torch(tmp_path / "ckpt" / CHECKPOINT_FILE)["epoch"] == 2
    torch.manual_seed(123)  # the global generator as another process would find it
    resumed = finetune_deepcluster(run_of(params, checkpoint_dir=tmp_path / "ckpt"))
    assert resumed.stats == uninterrupted.stats | {"images_trained": resumed.stats["images_trained"]}
    np.testing.assert_array_equal(resumed.clusters, uninterrupted.clusters)
    for key, value in uninterrupted.encoder.state_dict().items():
        torch.testing.assert_close(resumed.encoder.state_dict()[key], value, rtol=0, atol=0)

    other = finetune_deepcluster(run_of(params, checkpoint_dir=tmp_path / "ckpt", run_id="another"))
    np.testing.assert_array_equal(other.clusters, uninterrupted.clusters)  # another run's checkpoint is ignored


def test_trained_encoder_is_saved_in_the_pretrain_format(image_run, tmp_path):
    from imageclust.models.encoder import save_trained_encoder

    run = image_run(deepcluster_params(epochs=1))
    result = finetune_deepcluster(run)
    save_trained_encoder(tmp_path / ENCODER_FILE, result.encoder, run.encoder_path)
    model, header = load_encoder(tmp_path / ENCODER_FILE)
    assert header["finetuned"] and header["backbone"] == "small_cnn"
    for key, value in result.encoder.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


# ---------------------------------------------------------------- the guard


def test_guard_returns_the_cluster_stage_when_no_epoch_beats_it(image_run):
    """Starting features that hold the cluster stage's assignment exactly: no epoch's clustering of
    a random network's features can beat it, so it is returned, and predict uses the cluster stage."""
    run = image_run(deepcluster_params(guard=True))
    run.vectors = np.eye(3, dtype=np.float32)[run.initial_clusters] * 5
    run.initial_clusters = run.initial_clusters.copy()
    result = finetune_deepcluster(run)
    np.testing.assert_array_equal(result.clusters, run.initial_clusters)
    assert result.model == {"kept_cluster_stage": True} and result.encoder is None
    stats = result.stats
    assert stats["guard_kept_cluster_stage"] and stats["guard_best_epoch"] is None
    assert len(stats["guard_scores"]) == 3  # before each of the 2 epochs, and after the last
    assert max(stats["guard_scores"]) <= stats["guard_start_score"]


def test_guard_keeps_the_best_judged_epoch(image_run):
    """A cluster stage's assignment at chance in the starting features: an epoch's clustering wins, its
    network makes the final clusters."""
    run = image_run(deepcluster_params(guard=True, epochs=2))
    run.initial_clusters = np.random.default_rng(0).permutation(run.initial_clusters)
    result = finetune_deepcluster(run)
    stats = result.stats
    assert not stats["guard_kept_cluster_stage"] and stats["guard_best_epoch"] in (0, 1, 2)
    assert stats["guard_best_score"] == max(stats["guard_scores"]) > stats["guard_start_score"]
    assert "rule" in result.model and result.encoder is not None


def test_guard_defaults_to_whether_the_encoder_was_pretrained(image_run):
    run = image_run(deepcluster_params(guard=None, epochs=1))
    assert run.guarded(None) and not run.guarded(False)
    run.encoder_pretrained = False  # pretrain.method: none
    assert "guard_scores" not in finetune_deepcluster(run).stats
