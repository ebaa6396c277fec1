"""SCAN fine-tuning on features: neighbour mining, perturbations, training and the finetune stage."""

import shutil

import numpy as np
import pytest
import torch
from fakes import frozen_run, sphere_blobs

from imageclust.clustering.params import ClusterParams
from imageclust.clustering.stage import run_clustering
from imageclust.config import GlobalParams
from imageclust.errors import DataError
from imageclust.finetune.base import FinetuneRun
from imageclust.finetune.params import FinetuneParams
from imageclust.finetune.registry import METHODS
from imageclust.finetune.scan import finetune_scan, mine_neighbors, perturb, predict
from imageclust.finetune.stage import ASSIGNMENTS_FILE, MODEL_FILE, run_finetune
from imageclust.io import load_torch
from imageclust.metrics import clustering_accuracy
from imageclust.models.heads import MultiHead, cluster_head
from imageclust.tables import UNLABELED, FeatureTable, read_assignments, write_features

TINY = dict(epochs=3, self_label_epochs=1, num_heads=2, hidden_dim=16)


def scan_params(floor: bool = False, **overrides) -> FinetuneParams:
    """SCAN as it is (``floor``: the stage's floor, off unless a test asks: 2 epochs lose to k-means)."""
    return FinetuneParams(method="scan", batch_size=32, floor=floor, scan={**TINY, **overrides})


@pytest.fixture(autouse=True)
def no_dvc_repo(monkeypatch):
    # DVCLive would open the DVC/Git repository of the working directory (to name an experiment);
    # the tests only need its files, so it sees no repository. (Its own test mode, DVCLIVE_TEST,
    # fails with dvcyaml=False in dvclive 3.49.)
    import dvclive.live

    monkeypatch.setattr(dvclive.live, "get_dvc_repo", lambda: None)


def scan(x, labels, train, k, params, seed=0):
    run = frozen_run(x, labels, train, k, params, seed)
    result = finetune_scan(run)
    return result, run.curves.history


# ---------------------------------------------------------------- neighbours and perturbations


@pytest.mark.parametrize("chunk", [2048, 7])
def test_mine_neighbors_matches_brute_force(chunk):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5)).astype(np.float32)
    x[3] *= 50  # norms must not matter: neighbours are by cosine similarity
    got = mine_neighbors(torch.from_numpy(x), 4, chunk=chunk).numpy()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = np.empty((30, 4), dtype=np.int64)
    for i in range(30):
        sims = [(float(unit[i] @ unit[j]), j) for j in range(30) if j != i]
        expected[i] = [j for _, j in sorted(sims, reverse=True)[:4]]
    assert got.shape == (30, 4)
    np.testing.assert_array_equal(got, expected)
    assert not (got == np.arange(30)[:, None]).any()  # never itself


def test_mine_neighbors_excludes_self_even_with_duplicates():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    got = mine_neighbors(x, 1, chunk=3)
    assert got[:, 0].tolist() == [1, 0, 3, 2]


def test_mine_neighbors_caps_k_at_n_minus_one():
    got = mine_neighbors(torch.randn(4, 3), 10)
    assert got.shape == (4, 3)
    for i, row in enumerate(got.tolist()):
        assert sorted(row) == sorted(set(range(4)) - {i})


def test_perturb_keeps_unit_norm_and_is_reproducible():
    x = torch.nn.functional.normalize(torch.randn(10, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    for noise, dropout in [(0.0, 0.0), (0.1, 0.0), (0.0, 0.3), (0.5, 0.5)]:
        y = perturb(x, noise, dropout, torch.Generator().manual_seed(1))
        assert y.shape == x.shape
        torch.testing.assert_close(y.norm(dim=1), torch.ones(10))
        torch.testing.assert_close(y, perturb(x, noise, dropout, torch.Generator().manual_seed(1)))
    torch.testing.assert_close(perturb(x, 0.0, 0.0, torch.Generator()), x)  # no perturbation: identity
    noisy = perturb(x, 0.1, 0.0, torch.Generator().manual_seed(1))
    assert 0.0 < (noisy - x).norm(dim=1).mean() < 0.3  # noise of norm about 0.1
    dropped = perturb(x, 0.0, 0.5, torch.Generator().manual_seed(1))
    assert (dropped == 0).float().mean() > 0.2  # about half the coordinates zeroed


def test_multihead_and_predict():
    model = MultiHead(cluster_head(6, 0, 4) for _ in range(3))
    outs = model(torch.randn(5, 6))
    assert len(outs) == 3 and all(o.shape == (5, 4) for o in outs)
    probs = predict(cluster_head(6, 8, 4), torch.randn(9, 6), batch_size=4)
    assert probs.shape == (9, 4)
    torch.testing.assert_close(probs.sum(1), torch.ones(9))


# ---------------------------------------------------------------- finetune_scan


def test_finetune_scan_on_blobs():
    assert METHODS["scan"].run is finetune_scan
    x, labels = sphere_blobs()
    train = np.ones(90, dtype=bool)
    train[::5] = False  # some rows are only predicted
    result, history = scan(x, labels, train, 3, scan_params())
    stats = result.stats
    assert result.clusters.shape == (90,) and result.clusters.dtype == np.int64
    assert ((result.confidence >= 1 / 3 - 1e-6) & (result.confidence <= 1 + 1e-6)).all()
    assert stats["train_samples"] == 72 and stats["num_neighbors"] == 10
    assert stats["best_head"] in (0, 1) and len(stats["head_losses"]) == 2
    assert stats["best_head"] == int(np.argmin(stats["head_losses"]))
    # 10 nearest neighbours of a blob of 24 training points are all in the same blob
    assert stats["neighbor_label_agreement"] == 1.0
    for key in ("scan_confident_fraction", "final_confident_fraction"):
        assert 0.0 <= stats[key] <= 1.0
    # one row per epoch: SCAN's, then self-labelling's
    assert [sorted(row) for row in history] == [["scan/consistency", "scan/entropy", "scan/loss"]] * 3 + [
        ["selflabel/confident_fraction", "selflabel/loss"]
    ]
    assert all(0.0 <= row["scan/entropy"] <= np.log(3) + 1e-6 for row in history[:3])
    # the head saved is the one whose predictions were returned
    head = cluster_head(16, 16, 3)
    head.load_state_dict(result.model["head"])
    again = predict(head, torch.nn.functional.normalize(torch.from_numpy(x), dim=1)).numpy()
    np.testing.assert_array_equal(again.argmax(1), result.clusters)
    np.testing.assert_allclose(again.max(1), result.confidence, rtol=1e-5, atol=1e-6)


def test_finetune_scan_learns_the_blobs():
    x, labels = sphere_blobs()
    result, _ = scan(x, labels, np.ones(90, dtype=bool), 3, scan_params(epochs=40, lr=0.01, self_label_epochs=2))
    assert clustering_accuracy(labels, result.clusters) == 1.0
    assert result.stats["final_confident_fraction"] > 0.5


def test_finetune_scan_is_deterministic_and_seeded():
    x, labels = sphere_blobs()
    train = np.ones(90, dtype=bool)
    params = scan_params(epochs=1, self_label_epochs=0)
    a = scan(x, labels, train, 3, params, 0)[0].confidence
    b = scan(x, labels, train, 3, params, 0)[0].confidence
    c = scan(x, labels, train, 3, params, 1)[0].confidence
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_finetune_scan_without_labels_skips_label_diagnostic():
    x, labels = sphere_blobs(n=30)
    labels = labels.copy()
    labels[0] = UNLABELED
    result, _ = scan(x, labels, np.ones(30, dtype=bool), 3, scan_params(epochs=1, self_label_epochs=0, num_neighbors=3))
    assert "neighbor_label_agreement" not in result.stats
    assert result.clusters.shape == (30,)


# ---------------------------------------------------------------- the finetune stage


def write_blob_features(path, ids=None, seed=0):
    x, labels = sphere_blobs(seed=seed)
    ids = ids if ids is not None else np.array([f"s{i:03d}" for i in range(90)], dtype=object)
    splits = np.where(np.arange(90) % 6 == 0, "test", "train").astype(object)
    write_features(path, FeatureTable(ids=ids, splits=splits, labels=labels, vectors=x), {}, shard_rows=40)
    return labels, splits


def cluster_stage(tmp_path):
    labels, splits = write_blob_features(tmp_path / "features")
    run_clustering(tmp_path / "features", tmp_path / "cluster", 0, ["train"], ClusterParams(k=3, kmeans={"n_init": 2}))
    return labels, splits


def finetune(tmp_path, train_splits=None, params=None, **overrides):
    return run_finetune(
        tmp_path / "features",
        tmp_path / "cluster",
        tmp_path / "finetune",
        tmp_path / "live",
        GlobalParams(seed=0, device="cpu"),
        train_splits or ["train"],
        params or scan_params(**overrides),
        checkpoint_dir=tmp_path / "checkpoints",
    )


def test_the_floor_returns_the_cluster_stage_through_the_stage(tmp_path):
    """Two epochs of SCAN on these blobs are judged worse than the cluster stage's k-means: with the
    floor on, the stage writes the cluster stage's assignment and a model that says so."""
    cluster_stage(tmp_path)
    stats = finetune(tmp_path, params=scan_params(floor=True, epochs=2, self_label_epochs=1))
    assert stats["floor_kept_cluster_stage"] and stats["floor_score"] < stats["floor_start_score"]
    final = read_assignments(tmp_path / "finetune" / ASSIGNMENTS_FILE)
    start = read_assignments(tmp_path / "cluster" / "assignments.parquet")
    np.testing.assert_array_equal(final.clusters, start.clusters)
    model = load_torch(tmp_path / "finetune" / MODEL_FILE)
    assert model["kept_cluster_stage"] and model["method"] == "scan" and "head" not in model


def test_run_finetune_writes_assignments_head_and_curves(tmp_path):
    labels, splits = cluster_stage(tmp_path)
    stats = finetune(tmp_path, epochs=2, self_label_epochs=1)
    assert sorted(p.name for p in (tmp_path / "finetune").iterdir()) == [ASSIGNMENTS_FILE, MODEL_FILE]
    a = read_assignments(tmp_path / "finetune" / ASSIGNMENTS_FILE)
    assert a.ids.tolist() == [f"s{i:03d}" for i in range(90)]
    assert a.splits.tolist() == splits.tolist() and a.labels.tolist() == labels.tolist()
    assert a.clusters.min() >= 0 and a.clusters.max() < 3
    assert ((a.confidence >= 1 / 3 - 1e-6) & (a.confidence <= 1 + 1e-6)).all()

    model = load_torch(tmp_path / "finetune" / MODEL_FILE)
    assert model["method"] == "scan" and model["num_clusters"] == 3
    rebuilt = cluster_head(16, 16, 3)
    rebuilt.load_state_dict(model["head"])  # the saved weights are those of one cluster head

    assert stats["method"] == "scan" and stats["k"] == 3
    assert 0.0 <= stats["nmi_with_cluster_stage"] <= 1.0
    assert stats["train_samples"] == 75 and "best_head" in stats
    sizes = np.bincount(a.clusters[np.isin(a.splits, ["train"])], minlength=3)
    assert stats["cluster_sizes"] == {
        "largest_to_mean": round(sizes.max() / (sizes.sum() / 3), 3),
        "smallest_to_mean": round(sizes.min() / (sizes.sum() / 3), 3),
        "empty": int((sizes == 0).sum()),
    }

    metrics = tmp_path / "live" / "plots" / "metrics"
    for name, rows in [
        ("scan/loss", 2),
        ("scan/consistency", 2),
        ("scan/entropy", 2),
        ("selflabel/loss", 1),
        ("selflabel/confident_fraction", 1),
    ]:
        tsv = metrics / f"{name}.tsv"
        assert tsv.exists(), name
        lines = tsv.read_text().strip().splitlines()
        assert lines[0].split("\t")[0] == "step"
        assert len(lines) == 1 + rows, name
    steps = [int(line.split("\t")[0]) for line in (metrics / "selflabel/loss.tsv").read_text().splitlines()[1:]]
    assert steps == [2]  # self-labelling epochs follow the SCAN epochs on one step axis


def test_run_finetune_rejects_assignments_for_other_ids(tmp_path):
    cluster_stage(tmp_path)
    write_blob_features(tmp_path / "features", ids=np.array([f"t{i:03d}" for i in range(90)], dtype=object))
    with pytest.raises(DataError, match="do not match"):
        finetune(tmp_path)
    assert not (tmp_path / "finetune").exists()


def test_run_finetune_rejects_reordered_features(tmp_path):
    cluster_stage(tmp_path)
    write_blob_features(tmp_path / "features", ids=np.array([f"s{i:03d}" for i in range(90)][::-1], dtype=object))
    with pytest.raises(DataError):
        finetune(tmp_path)


def test_run_finetune_without_training_samples(tmp_path):
    cluster_stage(tmp_path)
    with pytest.raises(DataError, match="train_splits"):
        finetune(tmp_path, train_splits=["nowhere"])
    assert not (tmp_path / "finetune").exists()


def test_run_finetune_missing_cluster_output(tmp_path):
    write_blob_features(tmp_path / "features")
    with pytest.raises((DataError, FileNotFoundError, OSError)):
        finetune(tmp_path)


def test_method_none_keeps_the_cluster_stage(tmp_path):
    cluster_stage(tmp_path)
    stats = finetune(tmp_path, params=FinetuneParams(method="none"))
    ours = read_assignments(tmp_path / "finetune" / ASSIGNMENTS_FILE)
    theirs = read_assignments(tmp_path / "cluster" / ASSIGNMENTS_FILE)
    np.testing.assert_array_equal(ours.clusters, theirs.clusters)
    np.testing.assert_array_equal(ours.confidence, theirs.confidence)
    assert stats["method"] == "none" and stats["nmi_with_cluster_stage"] == pytest.approx(1.0)


def test_scan_resumes_after_a_kill_as_if_never_stopped(tmp_path, monkeypatch):
    cluster_stage(tmp_path)
    params = FinetuneParams(method="scan", batch_size=32, checkpoint_every=1, scan={**TINY, "self_label_epochs": 2})
    finetune(tmp_path, params=params)
    uninterrupted = read_assignments(tmp_path / "finetune" / ASSIGNMENTS_FILE)
    curves = (tmp_path / "live" / "plots" / "metrics" / "selflabel" / "loss.tsv").read_text()
    for folder in ("finetune", "live", "checkpoints"):
        shutil.rmtree(tmp_path / folder)

    original = FinetuneRun.end_epoch

    def killed(self, epoch, total, row, state, last=False):
        original(self, epoch, total, row, state, last)
        if epoch == 3:  # the first self-labelling epoch, after the head was chosen
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(FinetuneRun, "end_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        finetune(tmp_path, params=params)
    assert not (tmp_path / "finetune").exists()  # nothing half-written
    monkeypatch.setattr(FinetuneRun, "end_epoch", original)
    torch.manual_seed(99)
    finetune(tmp_path, params=params)
    resumed = read_assignments(tmp_path / "finetune" / ASSIGNMENTS_FILE)
    np.testing.assert_array_equal(resumed.clusters, uninterrupted.clusters)
    np.testing.assert_array_equal(resumed.confidence, uninterrupted.confidence)

    # the curves hold every epoch once, as an uninterrupted run's (timestamps aside)
    def values(text):
        return [line.split("\t")[-1] for line in text.splitlines()]

    resumed_curves = (tmp_path / "live" / "plots" / "metrics" / "selflabel" / "loss.tsv").read_text()
    assert values(resumed_curves) == values(curves)


def test_a_damaged_checkpoint_is_ignored(tmp_path):
    cluster_stage(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    stats = finetune(tmp_path, epochs=1, self_label_epochs=0)
    assert stats["method"] == "scan" and (tmp_path / "finetune" / ASSIGNMENTS_FILE).exists()


def test_scan_trains_the_backbone_on_images(image_run):
    params = FinetuneParams(
        method="scan",
        batch_size=16,
        scan={**TINY, "epochs": 2, "self_label_epochs": 1, "num_neighbors": 5, "augment": "none"},
    )
    params = params.model_copy(update={"scan": params.scan.model_copy(update={"train_backbone": True})})
    from imageclust.models.encoder import load_encoder

    assert params.trains_encoder
    run = image_run(params)
    before = load_encoder(run.encoder_path)[0].state_dict()
    result = finetune_scan(run)
    after = result.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the encoder was trained
    assert result.clusters.shape == (60,) and set(result.clusters) <= {0, 1, 2}
    assert ((result.confidence >= 1 / 3 - 1e-6) & (result.confidence <= 1 + 1e-6)).all()
    # the head saved gives the returned clusters on the trained encoder's features
    from imageclust.finetune.images import Images, embed

    head = cluster_head(8, 16, 3)
    head.load_state_dict(result.model["head"])
    x = torch.from_numpy(embed(result.encoder, Images(run), np.arange(60), 32))
    np.testing.assert_array_equal(predict(head, x).argmax(1).numpy(), result.clusters)
