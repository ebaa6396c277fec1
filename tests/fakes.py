"""Fake inputs the tests share: blobs of features, the inputs of the plot stage, and fine-tuning runs
on frozen features."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import yaml

from imageclust.data.prepared import RawDataset, write_prepared
from imageclust.finetune.base import FinetuneRun
from imageclust.tables import UNLABELED, Assignments, FeatureTable, read_features, write_assignments, write_features

CLASSES = ["zero", "one", "two"]


def blobs(n_per=20, d=5, seed=0, spread=0.05):
    """Three tight blobs in different directions (they stay apart after L2 normalisation)."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((3, d))
    centres[0, 0], centres[1, 1], centres[2, 2] = 5.0, 5.0, 5.0
    labels = np.repeat(np.arange(3), n_per)
    x = centres[labels] + rng.normal(scale=spread * 5, size=(3 * n_per, d))
    order = rng.permutation(len(labels))  # interleave the classes
    return x[order].astype(np.float32), labels[order]


def write_blobs(path, n_per=20, seed=0, test_every=4, unlabeled=()):
    x, labels = blobs(n_per=n_per, seed=seed)
    n = len(labels)
    splits = np.where(np.arange(n) % test_every == 0, "test", "train").astype(object)
    stored = labels.copy()
    stored[list(unlabeled)] = UNLABELED
    write_features(
        path,
        FeatureTable(
            ids=np.array([f"s{i:03d}" for i in range(n)], dtype=object), splits=splits, labels=stored, vectors=x
        ),
        {"backbone": "test"},
        shard_rows=17,
    )
    return x, labels, splits


def blob_project(root: Path, params: dict, n_per: int) -> np.ndarray:
    """A project folder as the benchmarks read it: ``params`` as its params.yaml, the repository's
    dvc.yaml, three blobs as the extract stage's features and a cluster stage that got nothing right
    (labels permuted). Returns the labels."""
    shutil.copy(Path(__file__).resolve().parents[1] / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    _, labels, _ = write_blobs(root / "artifacts" / "features", n_per=n_per)
    features = read_features(root / "artifacts" / "features")
    at_chance = np.random.default_rng(0).permutation(labels)
    write_assignments(
        root / "artifacts" / "cluster" / "assignments.parquet",
        Assignments.of(features, at_chance, np.ones(len(labels), np.float32), 3),
    )
    return labels


def four_blobs(n_per=40, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(6)[:4] * 6.0
    labels = np.repeat(np.arange(4), n_per)
    return (centres[labels] + rng.normal(scale=0.4, size=(len(labels), 6))).astype(np.float32), labels


def sphere_blobs(n=90, d=16, seed=0):
    """Three separable blobs on the unit sphere (around e1, e2, e3), classes interleaved."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    x = np.eye(d)[labels] * 4.0 + rng.normal(scale=0.3, size=(n, d))
    return x.astype(np.float32), labels


class Recorder:
    """Stands in for DVCLive: the rows each epoch logged."""

    def __init__(self):
        self.history = []

    def log(self, row):
        self.history.append(dict(row))

    def section(self):  # auto's candidates: one list of every candidate's rows
        return self


def killed_at(run: FinetuneRun, epoch: int) -> FinetuneRun:
    """``run`` as a process killed when it reaches ``epoch`` (0-based), before logging or saving it."""
    end_epoch = run.end_epoch

    def killed(at, total, row, state, last=False):
        if at == epoch:
            raise KeyboardInterrupt
        end_epoch(at, total, row, state, last)

    run.end_epoch = killed
    return run


def frozen_run(x, labels, train, k, params, seed=0, initial=None, **kwargs) -> FinetuneRun:
    """A run on frozen features whose initial clusters are ``initial``, by default k-means' (what the
    cluster stage gives)."""
    from sklearn.cluster import KMeans

    if initial is None:
        initial = KMeans(k, n_init=2, random_state=0).fit_predict(x)
    return FinetuneRun(
        vectors=x,
        labels=labels,
        train=train,
        initial_clusters=initial,
        initial_confidence=np.ones(len(x), dtype=np.float32),
        num_clusters=k,
        params=params,
        seed=seed,
        device=torch.device("cpu"),
        curves=kwargs.pop("curves", Recorder()),
        **kwargs,
    )


def plot_blobs(n_per_class: int = 20, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    centres = rng.normal(size=(3, dim)) * 5
    vectors = (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32)
    return vectors, labels


def write_curve(path: Path, name: str, values: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{1700000000000 + s}\t{s}\t{v}" for s, v in enumerate(values)]
    path.write_text("\n".join([f"timestamp\tstep\t{name}", *rows]) + "\n")


def class_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """8 x 8 grey images: a bright bar whose row is the class, on noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), 8, 8, 1), dtype=np.uint8)
    for i, label in enumerate(np.clip(labels, 0, None)):
        images[i, 2 * label + 1] = 250
    return images


def make_inputs(root: Path, labelled: bool = True) -> dict:
    vectors, true_labels = plot_blobs()
    labels = true_labels if labelled else np.full_like(true_labels, UNLABELED)
    ids = np.array([f"s{i:03d}" for i in range(len(labels))])
    splits = np.array(["train"] * len(labels))
    write_features(root / "features", FeatureTable(ids, splits, labels, vectors), meta={})
    write_prepared(
        root / "prepared",
        RawDataset("blobs", class_images(true_labels), labels, splits, ids.astype(object), CLASSES if labelled else []),
    )
    order = np.random.default_rng(1).permutation(len(ids))  # assignments need not share the features' order
    sources = {}
    for name, perm in [("cluster", [1, 2, 0]), ("finetune", [0, 1, 2])]:
        clusters = np.array(perm)[true_labels]
        a = Assignments(ids[order], splits[order], labels[order], clusters[order], np.ones(len(ids), np.float32))
        sources[name] = root / f"{name}.parquet"
        write_assignments(sources[name], a)
    return {"features": root / "features", "prepared": root / "prepared", "sources": sources}


PLOT_PARAMS = SimpleNamespace(
    embedding="pca",
    max_points=30,
    thumbnail_grid=6,
    sheet_confident=8,
    sheet_uncertain=2,
    overview_images=5,
    max_sheets=100,
)
