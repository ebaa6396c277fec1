"""End to end through DVC, beside tests/test_pipeline.py (so that the two run on separate workers):
K chosen without labels, a method that trains the encoder from scratch, a refusal before anything
runs, and the first experiment in a fresh clone."""

from __future__ import annotations

import json

import pytest
from test_pipeline import copy_working_tree, make_project, sh, stages_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("experiments") / "project")


def test_auto_k_then_deepcluster_from_scratch_then_a_refusal(project):
    auto = sh(
        project,
        "dvc",
        "exp",
        "run",
        "-S",
        "cluster.k=auto",
        "-S",
        "cluster.method=kmeans",
        "-S",
        "cluster.umap_dim=null",
        "-S",
        "cluster.kmeans.backend=faiss",
        "-S",
        "finetune.method=none",
    )
    assert {"cluster", "finetune", "evaluate", "export", "plot"} <= stages_run(auto.stdout)
    chosen = json.loads((project / "metrics/cluster.json").read_text())
    assert chosen["k_auto"] and 2 <= chosen["k"] <= 20 and chosen["k_criterion"] == "stability"
    assert json.loads((project / "metrics/finetune.json").read_text())["k"] == chosen["k"]
    assert (project / "report/k_curve.png").stat().st_size > 1000
    assert "Choice of K" in (project / "report/report.html").read_text()  # the curve, not the note

    # a method that trains the encoder: DeepCluster from scratch (pretrain.method=none with the
    # encoder: its random initialisation), with its `views` contrastive variant (spectral fine-tuning
    # and SCAN with train_backbone run through the stage commands in test_preset_systems.py and
    # tests/test_finetune*.py)
    scratch = sh(
        project,
        "dvc",
        "exp",
        "run",
        "-S",
        "cluster.k=10",
        "-S",
        "extract.backbone=encoder",
        "-S",
        "pretrain.method=none",
        "-S",
        "finetune.method=deepcluster",
        "-S",
        "finetune.deepcluster.epochs=2",
        "-S",
        "finetune.deepcluster.contrastive=views",
    )
    assert stages_run(scratch.stdout) == {
        "check_params",
        "pretrain",
        "extract",
        "cluster",
        "finetune",
        "evaluate",
        "export",
        "plot",
    }
    assert json.loads((project / "metrics/pretrain.json").read_text())["random_init"] is True
    assert (project / "artifacts/finetune/encoder.pt").exists()
    assert (project / "artifacts/finetune-live/plots/metrics/deepcluster/loss.tsv").read_text().count("\n") == 3

    # a method that trains the encoder cannot follow a frozen backbone: refused before anything runs
    params = (project / "params.yaml").read_text()
    refused = sh(project, "dvc", "exp", "run", "-S", "extract.backbone=pixels", check=False)
    (project / "params.yaml").write_text(params)
    assert refused.returncode != 0
    assert "finetune.method='deepcluster' is invalid with extract.backbone=pixels" in refused.stdout + refused.stderr
    assert stages_run(refused.stdout) == {"check_params"}


def test_first_experiment_in_a_fresh_clone(tmp_path):
    """A clone holds dvc.lock but not the cache behind it: its first `dvc exp run` of an early stage
    must work (it used to fail saving the experiment, with `failed to load directory ('plots',)`)."""
    root = tmp_path / "clone"
    copy_working_tree(root)
    assert (root / "dvc.lock").is_file() and not (root / ".dvc/cache").exists()
    sh(root, "git", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "as cloned")
    run = sh(root, "dvc", "exp", "run", "download", "-S", "seed=1")
    assert stages_run(run.stdout) == {"check_params", "download"}
    assert (root / "data/prepared/samples.parquet").is_file()
    assert "seed" in sh(root, "dvc", "exp", "show", "--no-pager", "--csv").stdout
