"""Fine-tuning methods through the pipeline, in a fresh clone of the repository's HEAD:

- ``digits``: the default pipeline on scikit-learn's digits, then one ``dvc exp run -S
  finetune.method=...`` per method (and per DeepCluster variant) on the same features: ACC, NMI and
  ARI of the finetune stage against the cluster stage's k-means on the features the experiment
  started from, and the finetune stage's seconds. DeepCluster also from scratch (the random network).
- ``mnist_deepcluster`` (and ``_views``, its contrastive variant): DeepCluster from scratch
  (``pretrain.method: none``: the small CNN at its random initialisation) on all 70,000 MNIST images
  at 16 px; the time of the finetune stage (the target: at most 20 minutes on this 2-core CPU) and
  the purity and NMI of every epoch's over-clustered pseudo-labels, read from the
  DVCLive curves (the per-epoch label scores are diagnostics the method logs and never reads).

Each run's result is merged into ``--out`` under its name. Usage:
``python benchmarks/finetune.py --runs digits mnist_deepcluster --out benchmarks/results/finetune.json``
(``make bench-finetune`` runs them all).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import (  # noqa: E402
    TORCHVISION_ROOT,
    clone,
    dvc_env,
    evaluated_scores,
    run_benchmarks,
    set_params,
    stages_through,
    timed_stage,
)

# name -> the -S overrides of one experiment on the digits features
DIGITS_EXPERIMENTS = {
    "scan": ["finetune.method=scan"],
    "temi": ["finetune.method=temi"],
    "deepcluster": ["finetune.method=deepcluster"],
    "deepcluster_head": ["finetune.method=deepcluster", "finetune.deepcluster.contrastive=head"],
    "deepcluster_views": ["finetune.method=deepcluster", "finetune.deepcluster.contrastive=views"],
    "spectral": ["finetune.method=spectral"],
    "scan_backbone": ["finetune.method=scan", "finetune.scan.train_backbone=true"],
    "none": ["finetune.method=none"],
    # from scratch, as the paper: the small CNN at its random initialisation, the paper's learning rate
    "deepcluster_scratch": ["pretrain.method=none", "finetune.method=deepcluster", "finetune.deepcluster.lr=0.05"],
    "deepcluster_scratch_views": [
        "pretrain.method=none",
        "finetune.method=deepcluster",
        "finetune.deepcluster.lr=0.05",
        "finetune.deepcluster.contrastive=views",
    ],
}
MNIST_DEEPCLUSTER = {
    "data.name": "mnist",
    "data.root": str(TORCHVISION_ROOT),
    "data.train_splits": ["train", "test"],
    "data.image_size": 16,
    "pretrain.method": "none",
    "pretrain.backbone": "small_cnn",
    "cluster.method": "kmeans",
    "finetune.method": "deepcluster",
}
# the paper's learning rate, from scratch; epochs sized to at most 20 minutes on a 2-core CPU
MNIST_DEEPCLUSTER_BLOCKS = {
    "mnist_deepcluster": {"epochs": 15, "lr": 0.05, "augment": "gray", "kmeans_n_init": 3},
    "mnist_deepcluster_views": {
        "epochs": 13,
        "lr": 0.05,
        "augment": "gray",
        "kmeans_n_init": 3,
        "contrastive": "views",
    },
}


def sh(project: Path, *cmd: str) -> str:
    result = subprocess.run(cmd, cwd=project, env=dvc_env(), capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def digits(workdir: Path) -> dict:
    project = clone(workdir, "digits")
    sh(project, "dvc", "repro")  # a fresh clone's lock names outputs its cache lacks: build them first
    sh(project, "git", "commit", "-qam", "baseline")
    result = {
        "kmeans (cluster stage)": {
            **evaluated_scores(project, "cluster"),
            "seconds": json.loads((project / "metrics/cluster.json").read_text())["seconds"],
        }
    }
    for name, overrides in DIGITS_EXPERIMENTS.items():
        started = time.perf_counter()
        sh(project, "dvc", "exp", "run", *(arg for o in overrides for arg in ("-S", o)))
        finetune = json.loads((project / "metrics/finetune.json").read_text())
        result[name] = {
            **evaluated_scores(project, "finetune"),
            "seconds": round(finetune["seconds"], 1),
            "experiment_seconds": round(time.perf_counter() - started, 1),
            "overrides": overrides,
            "kmeans_on_these_features": evaluated_scores(project, "cluster"),
        }
        sh(project, "git", "checkout", "--", "params.yaml")  # each experiment from the baseline's params
        print(name, result[name], flush=True)
    return result


def read_tsv(path: Path) -> list[float]:
    with open(path, newline="") as f:
        return [round(float(row[-1]), 4) for row in list(csv.reader(f, delimiter="\t"))[1:]]


def mnist_deepcluster(workdir: Path, name: str) -> dict:
    block = MNIST_DEEPCLUSTER_BLOCKS[name]
    project = clone(workdir, name)
    set_params(
        project / "params.yaml", {**MNIST_DEEPCLUSTER, **{f"finetune.deepcluster.{k}": v for k, v in block.items()}}
    )
    stages = {stage: timed_stage(project, stage) for stage in stages_through("evaluate")}
    curves = project / "artifacts/finetune-live/plots/metrics"
    return {
        "overrides": {**MNIST_DEEPCLUSTER, "finetune.deepcluster": block},
        "stages": stages,
        "finetune_minutes": round(stages["finetune"]["seconds"] / 60, 2),
        "kmeans_on_random_network": evaluated_scores(project, "cluster"),
        "deepcluster": evaluated_scores(project, "finetune"),
        "per_epoch_purity_with_labels": read_tsv(curves / "diagnostic/purity_with_labels.tsv"),
        "per_epoch_nmi_with_labels": read_tsv(curves / "diagnostic/nmi_with_labels.tsv"),
        "per_epoch_nmi_to_previous": read_tsv(curves / "deepcluster/nmi_to_previous.tsv"),
        "per_epoch_loss": read_tsv(curves / "deepcluster/loss.tsv"),
    }


RUNS = {"digits": digits, **{name: partial(mnist_deepcluster, name=name) for name in MNIST_DEEPCLUSTER_BLOCKS}}


if __name__ == "__main__":
    run_benchmarks(__doc__.splitlines()[0], RUNS)
