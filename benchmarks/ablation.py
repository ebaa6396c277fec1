"""The MoCo system's ablation as a queued DVC sweep: one component added at a time, each experiment
keeping the ones before it.

In a fresh clone of HEAD: the dataset is prepared once (``dvc repro download``), then one
``dvc exp run --queue`` per step and ``dvc exp run --run-all``; every experiment takes the prepared
data from DVC's cache. Each step is scored by k-means on its MoCo features (``finetune.method:
none``, so the table measures the representation, as the MoCo system's ablation did) and the
comparison command (``python -m imageclust compare``) makes its table. Results are merged into
``--out`` and the table of docs/results.md (between ``ablation:begin`` and ``ablation:end``) is rewritten.
Usage: ``python benchmarks/ablation.py --runs fashion_mnist --out benchmarks/results/ablation.json``
(``digits_tiny`` checks the mechanics in a few minutes).
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import TORCHVISION_ROOT, clone, dvc_env, run_benchmarks, set_params, write_between_markers  # noqa: E402
from imageclust.preset import set_args  # noqa: E402

RESULTS = REPO / "docs" / "results.md"
BEGIN, END = "<!-- ablation:begin -->", "<!-- ablation:end -->"

# the baseline: MoCo on a plain CNN with a linear projection (MoCo v1's), crops only, a constant rate
BASE = {
    "pretrain.method": "moco",
    "pretrain.backbone": "small_cnn",
    "pretrain.projection_dims": [64],
    "pretrain.augment.preset": "gray",
    "pretrain.augment.crop_min_scale": 0.9,
    "pretrain.augment.rotation_degrees": 0.0,
    "pretrain.augment.jitter": 0.0,
    "pretrain.augment.noise_std": 0.0,
    "pretrain.schedule": "constant",
    "pretrain.warmup_epochs": 1,
    "pretrain.moco.queue_size": 4096,
    "pretrain.checkpoint_every": 5,
    "cluster.method": "kmeans",
    "cluster.l2_normalize": True,
    "finetune.method": "none",
    "plot.embedding": "pca",
    "plot.thumbnail_grid": 0,
}
STEPS = [  # (name, what the step adds)
    ("baseline", {}),
    ("+ residual blocks", {"pretrain.backbone": "resnet32"}),
    ("+ projection head", {"pretrain.projection_dims": [128, 64]}),
    (
        "+ strong augmentation",
        {
            "pretrain.augment.crop_min_scale": None,
            "pretrain.augment.rotation_degrees": None,
            "pretrain.augment.jitter": None,
            "pretrain.augment.noise_std": None,
        },
    ),
    ("+ cosine schedule", {"pretrain.schedule": "cosine"}),
    ("+ larger model", {"pretrain.widths": [32, 64, 128]}),
    ("+ more epochs", "double"),  # twice the epochs
]
CONFIGS = {
    # Fashion-MNIST at a size a 2-core CPU finishes in about an hour: 10,000 training images at 16 px
    "fashion_mnist": {
        "data.name": "fashion_mnist",
        "data.root": str(TORCHVISION_ROOT),
        "data.splits": ["train", "test"],
        "data.train_splits": ["train"],
        "data.max_per_split": 10000,
        "data.image_size": 16,
        "pretrain.epochs": 10,
        "pretrain.batch_size": 256,
    },
    # the mechanics only: a few minutes
    "digits_tiny": {
        "data.name": "digits",
        "pretrain.epochs": 1,
        "pretrain.batch_size": 128,
        "pretrain.moco.queue_size": 256,
    },
}


def _slug(step: str) -> str:
    return "abl-" + re.sub(r"[^a-z0-9]+", "-", step.lower()).strip("-")


def run(name: str, workdir: Path) -> dict:
    project = clone(workdir, f"ablation-{name}")
    set_params(project / "params.yaml", {**BASE, **CONFIGS[name]})
    env = dvc_env()
    subprocess.run(["dvc", "repro", "download"], cwd=project, env=env, check=True, capture_output=True)
    overrides: dict = {}
    for step, adds in STEPS:
        if adds == "double":
            adds = {"pretrain.epochs": 2 * CONFIGS[name]["pretrain.epochs"]}
        overrides.update(adds)
        subprocess.run(
            ["dvc", "exp", "run", "--queue", "-n", _slug(step), *set_args(overrides)],
            cwd=project,
            env=env,
            check=True,
            capture_output=True,
        )
    started = time.perf_counter()
    sweep = subprocess.run(["dvc", "exp", "run", "--run-all"], cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if sweep.returncode:
        sys.exit(f"the sweep failed:\n{sweep.stdout[-3000:]}\n{sweep.stderr[-3000:]}")
    download_reran = [
        s
        for s, log in zip(STEPS, sweep.stdout.split("Reproducing experiment")[1:])
        if "Running stage 'download'" in log
    ]
    show = project / "exp-show.json"
    show.write_text(
        subprocess.run(
            ["dvc", "exp", "show", "--json"], cwd=project, env=env, check=True, capture_output=True, text=True
        ).stdout
    )
    out = project / "comparison"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "imageclust",
            "compare",
            *(_slug(s) for s, _ in STEPS),
            "--json",
            str(show),
            "--out",
            str(out),
            "--source",
            "cluster",
            "--split",
            "test",
        ],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
    )
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    return {
        "config": name,
        "overrides": {**BASE, **CONFIGS[name]},
        "sweep_seconds": round(seconds, 1),
        "experiments_that_reran_download": [s for s, _ in download_reran],
        "steps": [
            {
                "step": step,
                **{
                    k: row[k]
                    for k in ("cluster ACC", "cluster NMI", "cluster ARI", "pretrain s", "total s", "peak MiB")
                },
            }
            for (step, _), row in zip(STEPS, rows)
        ],
    }


def markdown_table(result: dict) -> str:
    lines = [
        "| step | k-means ACC (test) | NMI | ARI | pretraining | peak memory |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["steps"]:
        lines.append(
            f"| {row['step']} | {float(row['cluster ACC']):.3f} | {float(row['cluster NMI']):.3f} | "
            f"{float(row['cluster ARI']):.3f} | {float(row['pretrain s']) / 60:.1f} min | {row['peak MiB']} MiB |"
        )
    return "\n".join(lines)


def write_results_table(report: dict, page: Path = RESULTS) -> None:
    if "fashion_mnist" in report:
        write_between_markers(page, BEGIN, END, markdown_table(report["fashion_mnist"]))


RUNS = {name: partial(run, name) for name in CONFIGS}

if __name__ == "__main__":
    run_benchmarks(__doc__.splitlines()[0], RUNS, after_each=write_results_table)
