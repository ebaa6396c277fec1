"""TEMI: its beta-PMI loss, centroid initialisation, training on features, and resuming."""

import math

import numpy as np
import pytest
import torch
from fakes import killed_at

from imageclust.finetune.base import CHECKPOINT_FILE, Curves, FinetuneRun
from imageclust.finetune.params import FinetuneParams
from imageclust.finetune.registry import METHODS
from imageclust.finetune.temi import CosineHead, Params, centroid_init, finetune_temi, teacher_momentum
from imageclust.io import load_torch
from imageclust.losses.clustering import beta_pmi, temi_loss
from imageclust.metrics import clustering_accuracy
from imageclust.models.heads import MultiHead
from imageclust.tables import UNLABELED

TINY = dict(epochs=2, num_heads=2, hidden_dim=16, num_neighbors=5, init_from_centroids=False)


@pytest.fixture(autouse=True)
def no_dvc_repo(monkeypatch):
    # DVCLive would open the DVC/Git repository of the working directory (to name an experiment);
    # the tests only need its files, so it sees no repository.
    import dvclive.live

    monkeypatch.setattr(dvclive.live, "get_dvc_repo", lambda: None)


@pytest.fixture(autouse=True)
def one_thread():
    # tensors this small gain nothing from threads, and on a busy machine OpenMP threads that wait
    # for each other make a run a hundred times slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blobs(n=90, d=16, seed=0):
    """Three separable blobs on the unit sphere (around e1, e2, e3), classes interleaved."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    x = np.eye(d)[labels] * 4.0 + rng.normal(scale=0.3, size=(n, d))
    return x.astype(np.float32), labels


def make_run(x, labels, temi=None, batch_size=32, initial=None, **kwargs):
    n = len(x)
    params = FinetuneParams(method="temi", temi={**TINY, **(temi or {})}, batch_size=batch_size, checkpoint_every=1)
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
        **kwargs,
    )


# ---------------------------------------------------------------- the loss


def test_beta_pmi_by_hand():
    p1, p2, pk = [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.5, 0.25, 0.25]
    # (0.5*0.2)^0.5/0.5 + (0.3*0.2)^0.5/0.25 + (0.2*0.6)^0.5/0.25
    expected = math.log(0.1**0.5 / 0.5 + 0.06**0.5 / 0.25 + 0.12**0.5 / 0.25)
    got = beta_pmi(torch.tensor(p1).log(), torch.tensor(p2).log(), torch.tensor(pk), 0.5)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(1.0979, abs=1e-4)


def test_beta_pmi_with_beta_one_and_uniform_marginal_is_log_k_inner_product():
    rng = np.random.default_rng(0)
    p1, p2 = rng.dirichlet(np.ones(5), size=4), rng.dirichlet(np.ones(5), size=4)
    got = beta_pmi(torch.tensor(p1).log(), torch.tensor(p2).log(), torch.full((5,), 0.2, dtype=torch.float64), 1.0)
    np.testing.assert_allclose(got.numpy(), np.log(5 * (p1 * p2).sum(1)), rtol=1e-12)


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_temi_loss_by_hand():
    # 2 heads, 2 samples (each with its neighbour), 3 clusters
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(2, 2, 2, 3)), rng.normal(size=(2, 2, 2, 3))
    marginal = np.array([[0.2, 0.3, 0.5], [0.4, 0.4, 0.2]])
    beta, ts, tt = 0.6, 0.1, 0.04
    ps = [[[softmax(s[h, v, i] / ts) for i in range(2)] for v in range(2)] for h in range(2)]
    pt = [[[softmax(t[h, v, i] / tt) for i in range(2)] for v in range(2)] for h in range(2)]
    weight = [sum(float(pt[h][0][i] @ pt[h][1][i]) for h in range(2)) / 2 for i in range(2)]

    def pmi(a, b, pk):
        return math.log(sum((a[k] * b[k]) ** beta / pk[k] for k in range(3)))

    expected = []
    for h in range(2):
        pairs = [
            [weight[i] * -pmi(ps[h][v][i], pt[h][w][i], marginal[h]) for i in range(2)] for v, w in [(0, 1), (1, 0)]
        ]
        expected.append(np.mean([np.mean(pair) for pair in pairs]))

    student = torch.tensor(s, requires_grad=True)
    teacher = torch.tensor(t, requires_grad=True)
    loss, pmis, w = temi_loss(student, teacher, torch.tensor(marginal), beta, ts, tt)
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(w.numpy(), weight, rtol=1e-9)
    assert pmis.shape == (2,)
    loss.sum().backward()
    assert student.grad is not None and teacher.grad is None  # the teacher gives targets only


def test_temi_loss_stays_finite_when_probabilities_underflow():
    student = torch.tensor([[[[200.0, -200.0, 0.0]], [[-200.0, 200.0, 0.0]]]], requires_grad=True)
    teacher = torch.tensor([[[[0.0, 300.0, -300.0]], [[300.0, 0.0, -300.0]]]])
    loss = temi_loss(student, teacher, torch.tensor([[0.5, 0.5, 0.0]]), 0.6, 0.1, 0.04)[0]
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(student.grad).all()


# ---------------------------------------------------------------- centroid initialisation


def test_teacher_momentum_rises_on_a_cosine_to_its_final_value():
    p = Params()
    assert (p.teacher_temperature, p.teacher_momentum, p.teacher_momentum_final) == (0.1, 0.996, 1.0)  # TEMI's code
    assert teacher_momentum(p, 0, 100) == pytest.approx(0.996)
    assert teacher_momentum(p, 50, 100) == pytest.approx(0.998)
    assert teacher_momentum(p, 100, 100) == pytest.approx(1.0)
    rising = [teacher_momentum(p, step, 100) for step in range(101)]
    assert rising == sorted(rising)
    assert teacher_momentum(Params(teacher_momentum_final=0.996), 70, 100) == pytest.approx(0.996)  # constant


def test_centroid_init_sets_normalised_cluster_means():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 4)).astype(np.float32)
    clusters = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1])  # cluster 2 is empty
    torch.manual_seed(0)
    model = MultiHead(CosineHead(4, 0, 3) for _ in range(2))
    before = model.heads[1].prototypes[2].detach().clone()
    centroid_init(model, torch.from_numpy(x), clusters)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for head in model.heads:
        for k in (0, 1):
            mean = unit[clusters == k].mean(0)
            np.testing.assert_allclose(head.prototypes[k].detach().numpy(), mean / np.linalg.norm(mean), rtol=1e-5)
    torch.testing.assert_close(model.heads[1].prototypes[2], before)  # an empty cluster keeps its random row


def test_init_from_centroids_starts_from_the_cluster_stage():
    x, labels = blobs()
    initial = (labels + 1) % 3  # the cluster stage's (renamed) clusters
    run = make_run(
        x, labels, temi=dict(epochs=1, hidden_dim=0, num_heads=1, init_from_centroids=True, lr=1e-6), initial=initial
    )
    result = finetune_temi(run)
    np.testing.assert_array_equal(result.clusters, initial)  # hardly trained: the centroids decide


# ---------------------------------------------------------------- training


def test_finetune_temi_runs_and_logs(tmp_path):
    assert METHODS["temi"].run is finetune_temi
    x, labels = blobs()
    train = np.ones(90, dtype=bool)
    train[::5] = False  # some rows are only predicted
    curves = Curves(tmp_path / "live")
    result = finetune_temi(make_run(x, labels, train=train, curves=curves))
    curves.close()
    assert result.clusters.shape == (90,) and result.clusters.dtype == np.int64
    assert ((result.confidence >= 1 / 3 - 1e-6) & (result.confidence <= 1 + 1e-6)).all()
    stats = result.stats
    assert stats["train_samples"] == 72 and stats["num_neighbors"] == 5
    assert len(stats["head_losses"]) == 2 and stats["best_head"] == int(np.argmin(stats["head_losses"]))
    assert stats["neighbor_label_agreement"] == 1.0
    assert [sorted(row) for row in curves.history] == [
        ["temi/loss", "temi/marginal_entropy", "temi/pmi", "temi/weight"]
    ] * 2
    assert all(
        0 <= row["temi/weight"] <= 1 and 0 <= row["temi/marginal_entropy"] <= np.log(3) + 1e-6 for row in curves.history
    )
    assert (tmp_path / "live" / "plots" / "metrics" / "temi" / "loss.tsv").exists()
    # the saved head is the teacher's kept head, and gives the returned predictions
    head = CosineHead(16, 16, 3)
    head.load_state_dict(result.model["head"])
    head.eval()
    with torch.no_grad():
        unit = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
        probs = torch.softmax(head(unit) / result.model["temperature"], dim=1).numpy()
    np.testing.assert_array_equal(probs.argmax(1), result.clusters)
    np.testing.assert_allclose(probs.max(1), result.confidence, rtol=1e-5)


def test_finetune_temi_without_labels_skips_label_diagnostic():
    x, labels = blobs(n=30)
    labels = labels.copy()
    labels[0] = UNLABELED
    result = finetune_temi(make_run(x, labels, temi=dict(epochs=1)))
    assert "neighbor_label_agreement" not in result.stats


def test_finetune_temi_recovers_the_blobs():
    x, labels = blobs()
    run = make_run(
        x, labels, temi=dict(epochs=30, lr=0.05, teacher_momentum=0.9, num_neighbors=10, hidden_dim=0, num_heads=4)
    )
    result = finetune_temi(run)
    assert clustering_accuracy(labels, result.clusters) >= 0.95


def test_finetune_temi_is_seeded():
    x, labels = blobs()
    a = finetune_temi(make_run(x, labels))
    b = finetune_temi(make_run(x, labels))
    np.testing.assert_array_equal(a.confidence, b.confidence)


# ---------------------------------------------------------------- resuming


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    x, labels = blobs()
    temi = dict(epochs=3, lr=0.01)

    def run(name):
        return make_run(
            x,
            labels,
            temi=temi,
            checkpoint_dir=tmp_path / name,
            run_id="same",
            curves=Curves(tmp_path / f"live-{name}"),
        )

    whole = run("whole")
    expected = finetune_temi(whole)

    killed = killed_at(run("killed"), 2)  # the third epoch
    with pytest.raises(KeyboardInterrupt):
        finetune_temi(killed)
    assert load_torch(tmp_path / "killed" / CHECKPOINT_FILE)["epoch"] == 2

    resumed = run("killed")
    result = finetune_temi(resumed)
    np.testing.assert_array_equal(result.clusters, expected.clusters)
    np.testing.assert_array_equal(result.confidence, expected.confidence)
    for name, tensor in expected.model["head"].items():
        assert torch.equal(result.model["head"][name], tensor), name
    assert result.stats == expected.stats
    assert resumed.curves.history == whole.curves.history  # the killed run's epochs are logged again

    finished = finetune_temi(run("whole"))  # a finished run resumes after its last epoch
    np.testing.assert_array_equal(finished.confidence, expected.confidence)
