"""Contrastive pretraining on the shared MNIST and Fashion-MNIST, all 70,000 images each, through the
pipeline's own stages, with a params preset (``presets/``) and a method per run:

- pretraining time (the target: at most 20 minutes on this 2-core CPU) and images per second;
- k-means on the extracted features, scored on all 70,000 images (ACC, NMI, ARI; k-means on raw
  pixels: about 0.52 and 0.45 ACC): as the cluster stage runs it with the preset's preprocessing
  (``kmeans``), and on the L2-normalised features alone (``kmeans_l2_only``, 10 restarts);
- a 20-nearest-neighbour classifier (cosine, majority vote) fitted on the 60,000 training images'
  features and scored on the 10,000 test images: how much class information the features hold,
  whatever their cluster geometry;
- wall time and peak resident memory of every stage.

Runs in a fresh clone of the repository's HEAD (committed code); each run's result is merged into
``--out`` under its name. Usage:
``python benchmarks/pretrain.py --runs mnist_simclr fashion_mnist_simclr --out benchmarks/results/pretrain.json``.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import TORCHVISION_ROOT, clone, run_benchmarks, set_params, stages_through, timed_stage  # noqa: E402

STAGES = stages_through("cluster")
DATASETS = {
    name: {"data.name": name, "data.root": str(TORCHVISION_ROOT), "data.train_splits": ["train", "test"]}
    for name in ("mnist", "fashion_mnist")
}
# run name -> (dataset, preset, overrides after the preset's)
RUNS = {
    f"{dataset}_{method}": (dataset, "small_gray", {"pretrain.method": method})
    for dataset in DATASETS
    for method in ("simclr", "moco")
}


def knn_accuracy(features, unit: np.ndarray, k: int = 20) -> float:
    """Test images classified by the majority label of their k nearest training images (cosine on
    ``unit``, the L2-normalised vectors)."""
    import faiss

    train, test = features.splits == "train", features.splits == "test"
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(np.ascontiguousarray(unit[train]))
    _, nearest = index.search(np.ascontiguousarray(unit[test]), k)
    votes = features.labels[train][nearest]
    predicted = np.array([np.bincount(row).argmax() for row in votes])
    return float((predicted == features.labels[test]).mean())


def scores(project: Path) -> dict:
    from sklearn.cluster import KMeans

    from imageclust.clustering.preprocess import l2_normalize
    from imageclust.metrics import ari, clustering_accuracy, nmi
    from imageclust.tables import read_assignments, read_features

    assignments = read_assignments(project / "artifacts/cluster/assignments.parquet")
    labels, clusters = assignments.labels, assignments.clusters
    features = read_features(project / "artifacts/features")
    unit = l2_normalize(features.vectors).astype(np.float32)  # once, for k-means and the kNN classifier
    plain = KMeans(len(np.unique(labels)), n_init=10, random_state=0).fit_predict(unit)

    def rounded(truth, found):
        return {
            "acc": round(clustering_accuracy(truth, found), 4),
            "nmi": round(nmi(truth, found), 4),
            "ari": round(ari(truth, found), 4),
            "samples": int(len(truth)),
        }

    return {
        "kmeans": rounded(labels, clusters),
        "kmeans_l2_only": rounded(features.labels, plain),
        "knn20_test_accuracy": round(knn_accuracy(features, unit), 4),
        "feature_dim": int(features.vectors.shape[1]),
    }


def run(name: str, workdir: Path) -> dict:
    dataset, preset, extra = RUNS[name]
    from imageclust.preset import load_preset

    overrides = {**DATASETS[dataset], **load_preset(preset), **extra}
    project = clone(workdir, name)
    set_params(project / "params.yaml", overrides)
    stages = {stage: timed_stage(project, stage) for stage in STAGES}
    pretrain = json.loads((project / "metrics/pretrain.json").read_text())
    result = {
        "dataset": dataset,
        "preset": preset,
        "overrides": extra,
        "stages": stages,
        "pretrain_minutes": round(stages["pretrain"]["seconds"] / 60, 2),
        "pretrain_images_per_second": round(
            pretrain["epochs"] * pretrain["train_samples"] / stages["pretrain"]["seconds"]
        ),
        "epochs": pretrain["epochs"],
        **scores(project),
    }
    return result


if __name__ == "__main__":
    run_benchmarks(__doc__.splitlines()[0], {name: partial(run, name) for name in RUNS})
