"""Unlabelled data through every stage: label-based metrics are absent, label-free ones remain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def stage(name: str, params: Path, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", f"stages.{name}", "--params", str(params), *map(str, args)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"


def test_every_stage_runs_without_labels(tmp_path):
    pixels = np.rint(load_digits().images[:300] * (255 / 16)).astype(np.uint8)
    np.savez(tmp_path / "unlabeled.npz", images=pixels)  # no labels at all
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(name="arrays", root=str(tmp_path / "unlabeled.npz"), download_dir=str(tmp_path / "raw"))
    params["pretrain"].update(epochs=1, batch_size=64, warmup_epochs=0)
    params["finetune"].update(method="scan")
    params["finetune"]["scan"].update(epochs=2, self_label_epochs=1, num_heads=2)
    params["plot"]["embedding"] = "pca"
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    t = tmp_path
    stage("download", p, "--out", t / "prepared", "--metrics", t / "download.json")
    stage(
        "pretrain",
        p,
        "--data",
        t / "prepared",
        "--encoder",
        t / "encoder.pt",
        "--checkpoints",
        t / "ckpt",
        "--live",
        t / "live",
        "--metrics",
        t / "pretrain.json",
    )
    stage(
        "extract",
        p,
        "--data",
        t / "prepared",
        "--encoder",
        t / "encoder.pt",
        "--out",
        t / "features",
        "--work",
        t / "features-work",
    )
    stage("cluster", p, "--features", t / "features", "--out", t / "cluster", "--metrics", t / "cluster.json")
    stage(
        "finetune",
        p,
        "--features",
        t / "features",
        "--clusters",
        t / "cluster",
        "--data",
        t / "prepared",
        "--encoder",
        t / "encoder.pt",
        "--out",
        t / "finetune",
        "--checkpoints",
        t / "finetune-ckpt",
        "--live",
        t / "finetune-live",
        "--metrics",
        t / "finetune.json",
    )
    stage(
        "evaluate",
        p,
        "--features",
        t / "features",
        "--source",
        f"cluster={t / 'cluster/assignments.parquet'}",
        "--source",
        f"finetune={t / 'finetune/assignments.parquet'}",
        "--out",
        t / "evaluate.json",
    )
    stage(
        "plot",
        p,
        "--features",
        t / "features",
        "--prepared",
        t / "prepared",
        "--source",
        f"cluster={t / 'cluster/assignments.parquet'}",
        "--source",
        f"finetune={t / 'finetune/assignments.parquet'}",
        "--out",
        t / "plots",
    )

    download = json.loads((t / "download.json").read_text())
    assert download["labeled"] == 0 and download["num_samples"] == 300
    evaluate = json.loads((t / "evaluate.json").read_text())
    for source in ("cluster", "finetune"):
        for split, scores in evaluate[source].items():
            assert not {"acc", "acc_many_to_one", "nmi", "ari"} & set(scores), (source, split)
            assert scores["n_labeled"] == 0
        assert {"silhouette", "davies_bouldin", "calinski_harabasz"} <= set(evaluate[source]["all"])
    assert "neighbor_label_agreement" not in json.loads((t / "finetune.json").read_text())
    assert (t / "plots/embedding.png").exists()
    assert (t / "plots/confusion_finetune.csv").read_text().strip() == "actual,predicted"  # no labels: no rows
    dvc_renders_an_empty_confusion(t / "plots/confusion_finetune.csv", tmp_path / "dvc_plots")


def dvc_renders_an_empty_confusion(csv: Path, project: Path) -> None:
    """`dvc plots show` draws dvc.yaml's confusion plot from the header-only CSV of unlabelled data:
    an empty plot, not an error."""
    import shutil

    plot = next(p for p in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"] if "confusion_finetune" in p)
    (project / "report").mkdir(parents=True)
    shutil.copy(csv, project / "report/confusion_finetune.csv")
    (project / "dvc.yaml").write_text(yaml.safe_dump({"plots": [plot]}))
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "plots", "show", "--json"]):
        result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command}: {result.stderr[-2000:]}"
    assert json.loads(result.stdout)["data"]["confusion_finetune"] == []
