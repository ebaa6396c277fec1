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

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TORCHVISION_ROOT = REPO.parent / "shared" / "datasets" / "torchvision"
STAGES = ["check_params", "download", "pretrain", "extract", "cluster"]
DATASETS = {
    name: {"data.name": name, "data.root": str(TORCHVISION_ROOT), "data.train_splits": ["train", "test"]}
    for name in ("mnist", "fashion_mnist")
}
# run name -> (dataset, preset, overrides after the preset's)
RUNS = {
    f"{dataset}_{method}": (dataset, "small_gray", {"pretrain.method": method})
    for dataset in DATASETS for method in ("simclr", "moco")
}


def set_params(params_file: Path, overrides: dict) -> None:
    params = yaml.safe_load(params_file.read_text())
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        if leaf not in node:
            sys.exit(f"unknown params key {key}")
        node[leaf] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def timed_stage(project: Path, stage: str) -> dict:
    """``dvc repro --single-item stage`` under /usr/bin/time: wall seconds and the peak RSS of the
    largest process (the stage's python)."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "peak_kib=%M", "dvc", "repro", "--single-item", stage],
                            cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"{stage} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    peak = [line for line in result.stderr.splitlines() if line.startswith("peak_kib=")]
    # /usr/bin/time reports dvc's own process tree's largest member
    return {"seconds": round(seconds, 1), "peak_mib": round(int(peak[-1].split("=")[1]) / 1024) if peak else None}


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
        return {"acc": round(clustering_accuracy(truth, found), 4), "nmi": round(nmi(truth, found), 4),
                "ari": round(ari(truth, found), 4), "samples": int(len(truth))}

    return {"kmeans": rounded(labels, clusters), "kmeans_l2_only": rounded(features.labels, plain),
            "knn20_test_accuracy": round(knn_accuracy(features, unit), 4), "feature_dim": int(features.vectors.shape[1])}


def run(name: str, workdir: Path) -> dict:
    dataset, preset, extra = RUNS[name]
    from imageclust.preset import load_preset

    overrides = {**DATASETS[dataset], **load_preset(preset), **extra}
    project = workdir / name
    subprocess.run(["git", "clone", "-q", str(REPO), str(project)], check=True)
    set_params(project / "params.yaml", overrides)
    stages = {stage: timed_stage(project, stage) for stage in STAGES}
    pretrain = json.loads((project / "metrics/pretrain.json").read_text())
    result = {"commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True,
                                       text=True).stdout.strip(),
              "dataset": dataset, "preset": preset, "overrides": extra, "stages": stages,
              "pretrain_minutes": round(stages["pretrain"]["seconds"] / 60, 2),
              "pretrain_images_per_second": round(pretrain["epochs"] * pretrain["train_samples"]
                                                  / stages["pretrain"]["seconds"]),
              "epochs": pretrain["epochs"], **scores(project)}
    print(json.dumps({name: result}, indent=2), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=sorted(RUNS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, help="keep the clones here (default: a temporary folder)")
    args = parser.parse_args()
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in args.runs:
            report[name] = run(name, workdir)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
