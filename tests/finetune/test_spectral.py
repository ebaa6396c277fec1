"""Spectral fine-tuning of the encoder: the prototype loss, one epoch on tiny images, the score's
direction, early stopping and a bit-identical resume after a kill."""

import math

import numpy as np
import pytest
import torch

from imageclust.data.prepared import RawDataset, write_prepared
from imageclust.finetune import spectral
from imageclust.finetune.base import Curves, FinetuneRun
from imageclust.finetune.params import FinetuneParams
from imageclust.losses.prototypes import prototype_loss
from imageclust.metrics import nmi
from imageclust.models.backbones import build_backbone
from imageclust.models.encoder import save_encoder
from imageclust.pretrain.params import PretrainParams

N = 60


@pytest.fixture(autouse=True)
def no_dvc_repo(monkeypatch):
    # DVCLive would open the DVC/Git repository of the working directory; the tests only need its files.
    import dvclive.live

    monkeypatch.setattr(dvclive.live, "get_dvc_repo", lambda: None)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """60 gray 8x8 images in 3 groups (bright top half, bottom half, left half, with noise) and a tiny
    random encoder saved as the pretrain stage does."""
    root = tmp_path_factory.mktemp("spectral")
    rng = np.random.default_rng(0)
    groups = np.arange(N) % 3
    images = rng.integers(0, 60, size=(N, 8, 8, 1))
    for i, g in enumerate(groups):
        part = [np.s_[:4, :], np.s_[4:, :], np.s_[:, :4]][g]
        images[i][part] += 150
    write_prepared(
        root / "prepared",
        RawDataset(
            name="fake",
            images=images.astype(np.uint8),
            labels=groups,
            splits=np.where(np.arange(N) % 5, "train", "test"),
            ids=np.array([f"s{i}" for i in range(N)]),
            classes=["top", "bottom", "left"],
        ),
    )
    torch.manual_seed(0)
    save_encoder(
        root / "encoder.pt", build_backbone("small_cnn", 1, 8, widths=[4, 8]), PretrainParams(widths=[4, 8]), 1, 8
    )
    return root, groups


def make_run(inputs, tmp_path=None, curves=None, run_id="", **spectral_params):
    root, groups = inputs
    block = dict(epochs=1, recluster_every=1, num_neighbors=5, augment="gray", score_samples=30, patience=None)
    block["guard"] = False  # a random encoder: its starting features judge nothing
    params = FinetuneParams(method="spectral", batch_size=16, checkpoint_every=1, spectral={**block, **spectral_params})
    return FinetuneRun(
        vectors=np.random.default_rng(0).normal(size=(N, 4)).astype(np.float32),
        labels=groups,
        train=np.arange(N) % 5 != 0,
        initial_clusters=groups.copy(),
        initial_confidence=np.ones(N, np.float32),
        num_clusters=3,
        params=params,
        seed=0,
        device=torch.device("cpu"),
        prepared_dir=root / "prepared",
        encoder_path=root / "encoder.pt",
        row_images=np.arange(N),
        checkpoint_dir=tmp_path,
        run_id=run_id,
        curves=curves,
    )


def test_prototype_loss_matches_a_hand_computed_value():
    z = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, -2.0]])  # normalised by the loss
    centres = np.array([[1.0, 0.0], [0.0, 1.0]])
    targets = [1, 0, 0]
    t = 0.5
    expected = 0.0
    for row, target in zip(z, targets):
        logits = (row / np.linalg.norm(row)) @ centres.T / t
        expected += -(logits[target] - math.log(sum(math.exp(v) for v in logits)))
    expected /= len(z)
    got = prototype_loss(torch.tensor(z), torch.tensor(centres) * 7.0, torch.tensor(targets), t)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_one_epoch_on_tiny_images(inputs, tmp_path):
    curves = Curves(tmp_path / "live")
    result = spectral.finetune_spectral(make_run(inputs, curves=curves))
    curves.close()
    assert result.clusters.shape == (N,) and result.clusters.dtype == np.int64
    assert result.confidence.shape == (N,) and result.confidence.dtype == np.float32
    assert set(result.clusters.tolist()) <= {0, 1, 2}
    assert ((result.confidence > 0) & (result.confidence <= 1)).all()
    train = np.arange(N) % 5 != 0
    np.testing.assert_array_equal(result.clusters[train], result.model["train_labels"].numpy())
    stats = result.stats
    assert stats["train_samples"] == 48 and stats["score"] == "silhouette" and stats["reclusterings"] == 1
    assert stats["best_epoch"] == 0 and len(stats["scores"]) == 1 and stats["best_score"] == stats["scores"][0]
    assert -1 <= stats["best_score"] <= 1 and not stats["stopped_early"]
    assert result.model["centres"].shape == (3, 8)
    assert isinstance(result.encoder, torch.nn.Module)
    assert set(curves.history[0]) == {"spectral/loss", "spectral/silhouette", "spectral/nmi_to_previous"}
    assert nmi(inputs[1], result.clusters) > 0.8  # the three groups are visible even to a random encoder


def test_score_direction():
    assert spectral.oriented("davies_bouldin", 0.5) > spectral.oriented("davies_bouldin", 1.0)
    for name in ("silhouette", "calinski_harabasz"):
        assert spectral.oriented(name, 1.0) > spectral.oriented(name, 0.5)
    assert spectral.oriented("silhouette", math.nan) == -math.inf
    # tight, separated clusters beat mixed ones under every score, once oriented
    rng = np.random.default_rng(0)
    good = np.arange(30) % 3
    x = np.eye(3)[good] * 5 + rng.normal(scale=0.1, size=(30, 3))
    bad = rng.permutation(good)
    for name in ("silhouette", "davies_bouldin", "calinski_harabasz"):
        assert spectral.oriented(name, spectral.cluster_score(x, good, name)) > spectral.oriented(
            name, spectral.cluster_score(x, bad, name)
        )
    assert spectral.cluster_score(x[:4], np.zeros(4, int), "davies_bouldin") != spectral.cluster_score(
        x[:4], np.zeros(4, int), "davies_bouldin"
    )  # one cluster: NaN


@pytest.mark.parametrize("score, step", [("silhouette", -1.0), ("davies_bouldin", 1.0)])
def test_early_stopping_after_patience_epochs_without_improvement(inputs, monkeypatch, score, step):
    values = iter(10.0 + step * np.arange(100))  # always worse than the first epoch
    monkeypatch.setattr(spectral, "cluster_score", lambda x, labels, name: float(next(values)))
    stats = spectral.finetune_spectral(make_run(inputs, epochs=10, patience=2, score=score, recluster_every=100)).stats
    assert stats["stopped_early"] and stats["best_epoch"] == 0 and stats["best_score"] == 10.0
    assert len(stats["scores"]) == 3  # the best epoch, then 2 without improvement


def test_killed_run_resumes_bit_identically(inputs, tmp_path, monkeypatch):
    kw = dict(epochs=3, recluster_every=3, score="davies_bouldin")  # resumes inside a re-clustering period
    whole = spectral.finetune_spectral(make_run(inputs, tmp_path / "a", run_id="r", **kw))

    end_epoch = FinetuneRun.end_epoch

    def killed_after_the_second_epoch(self, epoch, total, row, state, last=False):
        end_epoch(self, epoch, total, row, state, last)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(FinetuneRun, "end_epoch", killed_after_the_second_epoch)
    killed_curves = Curves(tmp_path / "live_killed")
    with pytest.raises(KeyboardInterrupt):
        spectral.finetune_spectral(make_run(inputs, tmp_path / "b", curves=killed_curves, run_id="r", **kw))
    killed_curves.close()
    monkeypatch.setattr(FinetuneRun, "end_epoch", end_epoch)
    curves = Curves(tmp_path / "live")
    resumed = spectral.finetune_spectral(make_run(inputs, tmp_path / "b", curves=curves, run_id="r", **kw))
    curves.close()

    assert len(curves.history) == 3  # 2 epochs re-logged from the checkpoint, 1 run
    np.testing.assert_array_equal(resumed.clusters, whole.clusters)
    np.testing.assert_array_equal(resumed.confidence, whole.confidence)
    # the same run, but images/s counts the images this process trained on: 1 epoch of 3
    assert resumed.stats.pop("images_trained") * 3 == whole.stats.pop("images_trained")
    assert resumed.stats == whole.stats
    for name, tensor in whole.encoder.state_dict().items():
        assert torch.equal(resumed.encoder.state_dict()[name], tensor), name


def test_guard_returns_the_cluster_stage_when_no_clustering_beats_it(inputs, monkeypatch):
    """Spectral clusterings at chance, and starting features that hold the cluster stage's groups: the
    cluster stage's assignment is returned."""
    import types

    run = make_run(inputs, epochs=2, guard=True)
    run.vectors = np.eye(3, dtype=np.float32)[run.initial_clusters] * 5
    shuffled = np.random.default_rng(0).integers(0, 3, size=int(run.train.sum()))
    monkeypatch.setattr(
        spectral.spectral_clustering,
        "fit_spectral",
        lambda z, k, params, seed: types.SimpleNamespace(fit_labels=shuffled),
    )
    result = spectral.finetune_spectral(run)
    np.testing.assert_array_equal(result.clusters, run.initial_clusters)
    assert result.model == {"kept_cluster_stage": True} and result.encoder is None
    assert result.stats["guard_kept_cluster_stage"]
    assert result.stats["guard_best_score"] < result.stats["guard_start_score"]


def test_guard_keeps_the_best_judged_clustering(inputs, tmp_path):
    run = make_run(inputs, epochs=2, guard=True, curves=Curves(tmp_path / "live"))
    run.initial_clusters = np.random.default_rng(0).permutation(run.initial_clusters)  # at chance
    result = spectral.finetune_spectral(run)
    run.curves.close()
    assert not result.stats["guard_kept_cluster_stage"]
    assert result.stats["guard_best_score"] > result.stats["guard_start_score"]
    assert "spectral/guard_score" in run.curves.history[0]
