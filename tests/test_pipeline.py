"""End to end through DVC in a temporary git repository: repro, a no-op repro, an experiment that
changes cluster.k, exp show, metrics diff, a queued sweep and its comparison, and a bad parameter
that leaves the outputs alone."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {
    "pretrain": {"epochs": 1, "batch_size": 128, "warmup_epochs": 0},
    "finetune": {"method": "scan", "scan": {"epochs": 2, "self_label_epochs": 1, "num_heads": 2}},
    # every experiment redraws the plots: small sheets and no map with images keep the test quick
    "plot": {
        "embedding": "pca",
        "thumbnail_grid": 0,
        "sheet_confident": 10,
        "sheet_uncertain": 2,
        "overview_images": 4,
    },
}


def sh(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        # `python` in dvc.yaml must be this interpreter, whatever the caller's PATH says
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([a-z_]+)'", output))


def copy_working_tree(root: Path, leave_out: tuple[str, ...] = ()) -> None:
    """This working tree's tracked and new files (what a clone of it would hold), under ``root``."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file() and not name.startswith(leave_out):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("pipeline") / "project")


def make_project(root: Path) -> Path:
    """A git repository holding this working tree's tracked and new files, with tiny params."""
    copy_working_tree(root, leave_out=("metrics/", "dvc.lock"))
    params = yaml.safe_load((root / "params.yaml").read_text())

    def merge(into: dict, values: dict) -> None:  # inside blocks, keeping their other keys
        for key, value in values.items():
            if isinstance(value, dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(params, TINY)
    params["cluster"]["kmeans"]["n_init"] = 2  # inside the method's block, keeping its other keys
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "tiny pipeline")
    return root


def assert_git_holds_small_files_only(project: Path, limit: int = 512 * 1024) -> None:
    """What git tracks, and what an experiment changed that git would take, is small: the report,
    pictures and per-sample tables are in DVC's cache."""
    tracked = sh(project, "git", "ls-files").stdout.split()
    changed = [
        line[3:] for line in sh(project, "git", "status", "--porcelain", "--untracked-files=all").stdout.splitlines()
    ]
    assert changed, "the experiment changed no file git tracks"
    sizes = {name: (project / name).stat().st_size for name in {*tracked, *changed} if (project / name).is_file()}
    assert not {name: size for name, size in sizes.items() if size > limit}
    assert not [name for name in changed if name.startswith("report/") and name != "report/.gitignore"]
    assert sh(project, "git", "check-ignore", "report/report.html", "report/sheets").returncode == 0


def test_pipeline_through_dvc(project):
    first = sh(project, "dvc", "repro")
    assert stages_run(first.stdout) == {
        "check_params",
        "download",
        "pretrain",
        "extract",
        "extract_spaces",
        "cluster",
        "finetune",
        "evaluate",
        "export",
        "plot",
    }
    evaluate = json.loads((project / "metrics/evaluate.json").read_text())
    assert set(evaluate) == {"cluster", "finetune"}
    assert set(evaluate["finetune"]) == {"train", "test", "all"}
    assert 0.0 <= evaluate["finetune"]["all"]["acc"] <= 1.0
    for name in (
        "confusion_finetune.png",
        "confusion_finetune.csv",
        "embedding.png",
        "training_curves.png",
        "cluster_sizes.png",
        "overview.png",
        "sheets/cluster_000.png",
        "report.html",
    ):
        assert (project / "report" / name).stat().st_size > 0
    assert (project / "plots/cluster_labels_finetune.csv").stat().st_size > 0
    exported = list(csv.DictReader(open(project / "artifacts/export/assignments.csv")))
    assert len(exported) == evaluate["finetune"]["all"]["n"]
    assert_predict_gives_the_exported_clusters(project, "new")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "first results")
    first_run = {
        row["id"]: row["cluster"] for row in csv.DictReader(open(project / "artifacts/export/assignments.csv"))
    }
    # DVC's model registry: registered by GTO's convention (a git tag NAME@vX.Y.Z), fetched by name
    sh(project, "git", "tag", "-a", "image-clusterer@v1.0.0", "-m", "digits, first results")
    fetched = project.parent / "fetched-model"
    sh(project, "dvc", "artifacts", "get", ".", "image-clusterer", "-o", str(fetched))
    assert json.loads((fetched / "bundle.json").read_text())["k"] == 10

    again = sh(project, "dvc", "repro")
    assert stages_run(again.stdout) == set()
    assert "up to date" in again.stdout

    experiment = sh(project, "dvc", "exp", "run", "-S", "cluster.k=8")
    assert stages_run(experiment.stdout) == {"check_params", "cluster", "finetune", "evaluate", "export", "plot"}
    assert json.loads((project / "metrics/cluster.json").read_text())["k"] == 8
    assert_git_holds_small_files_only(project)
    # the registered model, and the committed run by --rev, sort new images as the first run did, and
    # say that the workspace's models were made otherwise
    for options in (("--model", str(fetched)), ("--model", "image-clusterer"), ("--rev", "HEAD")):
        predicted, log = predicted_clusters(project, "new", *options)
        assert predicted == {name: first_run[name] for name in predicted}, options
        assert "made with params that differ from" in log and "cluster.k: 10 -> 8" in log, log
    bad = sh(project, sys.executable, "-m", "imageclust", "predict", "../new", "--rev", "no-such-rev", check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: --rev: 'no-such-rev' is not a git revision")
    # and the assignments table of the run that made a registered model
    exported = ("-m", "imageclust", "export", "--model", "image-clusterer@v1.0.0", "--out", "../first-export")
    sh(project, sys.executable, *exported)
    rows = csv.DictReader(open(project.parent / "first-export/assignments.csv"))
    assert {r["id"]: r["cluster"] for r in rows} == first_run

    diff = json.loads(sh(project, "dvc", "metrics", "diff", "--json").stdout)
    assert diff["metrics/cluster.json"]["k"] == {"old": 10, "new": 8, "diff": -2}
    assert "finetune.all.acc" in diff["metrics/evaluate.json"]

    rows = list(csv.DictReader(io.StringIO(sh(project, "dvc", "exp", "show", "--csv").stdout)))
    assert {"cluster.all.acc", "finetune.all.acc", "finetune.test.nmi", "cluster.k"} <= set(rows[0])
    by_rev = {row["rev"]: row for row in rows}
    experiment_rows = [row for rev, row in by_rev.items() if rev not in ("workspace", "master", "main")]
    assert [row["cluster.k"] for row in experiment_rows] == ["8"]
    assert experiment_rows[0]["finetune.all.acc"] == str(diff["metrics/evaluate.json"]["finetune.all.acc"]["new"])

    # a frozen backbone: pretrain has nothing to train, download nothing to redo; TURTLE on two
    # representation spaces, the pixels at their 8 px and at 12 px, and predict embeds new images in both
    pixels = sh(
        project,
        "dvc",
        "exp",
        "run",
        "-S",
        "extract.backbone=pixels",
        "-S",
        "pretrain.method=none",
        "-S",
        "extract.spaces=[{backbone: pixels, image_size: 12}]",
        "-S",
        "finetune.method=turtle",
        "-S",
        "finetune.turtle.outer_steps=40",
        "-S",
        "finetune.turtle.restarts=1",
    )
    assert stages_run(pixels.stdout) == {
        "check_params",
        "pretrain",
        "extract",
        "extract_spaces",
        "cluster",
        "finetune",
        "evaluate",
        "export",
        "plot",
    }
    assert json.loads((project / "metrics/pretrain.json").read_text())["skipped"] is True
    assert json.loads((project / "metrics/extract.json").read_text())["dim"] == 64
    assert json.loads((project / "metrics/extract_spaces.json").read_text())["dims"] == {"pixels_12": 144}
    tuned = json.loads((project / "metrics/finetune.json").read_text())
    assert tuned["method"] == "turtle" and tuned["spaces"] == 2
    assert_predict_gives_the_exported_clusters(project, "new_two_spaces")
    # another backbone's block is not a dependency of this experiment's extract stage
    other_block = sh(
        project,
        "dvc",
        "exp",
        "run",
        "-S",
        "extract.dinov2.pooling=cls",
        "-S",
        "pretrain.moco.momentum=0.99",
        "-S",
        "finetune.temi.beta=0.5",
    )
    assert stages_run(other_block.stdout) == {"check_params"}

    # clustering methods on the same features as a queued sweep (every one, HDBSCAN's noise included,
    # runs through the stage's own function in tests/test_clustering.py; here, what DVC reruns), with
    # fine-tuning methods on frozen features: TEMI, none (the cluster stage's assignments); then the
    # comparison command
    sweep = {
        "q-gmm": (["cluster.method=gmm", "finetune.method=temi", "finetune.temi.epochs=2"], "gmm"),
        "q-spectral": (["cluster.method=spectral", "finetune.method=none"], "spectral"),
    }
    # a queued experiment gets git's tracked files and DVC's cache: commit the workspace's results first
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "pixel features")
    for name, (overrides, _) in sweep.items():
        sh(project, "dvc", "exp", "run", "--queue", "-n", name, *(arg for o in overrides for arg in ("-S", o)))
    queued = sh(project, "dvc", "exp", "run", "--run-all").stdout
    for name, log in zip(sweep, re.split(r"Reproducing experiment '[^']+'", queued)[1:]):
        # each queued run takes pretrain and extract from the cache: only the clustering and after rerun
        assert stages_run(log) == {"check_params", "cluster", "finetune", "evaluate", "export", "plot"}, name
        assert "Stage 'extract' didn't change, skipping" in log, name
    (project.parent / "show.json").write_text(sh(project, "dvc", "exp", "show", "--json").stdout)
    sh(project, sys.executable, "-m", "imageclust", "compare", *sweep, "--json", "../show.json", "--out", "../cmp")
    table = {row["experiment"]: row for row in csv.DictReader(open(project.parent / "cmp/comparison.csv"))}
    assert list(table) == list(sweep) and (project.parent / "cmp/comparison.png").stat().st_size > 1000
    for name, (overrides, method) in sweep.items():
        row = table[name]
        tuned = next(o.split("=")[1] for o in overrides if o.startswith("finetune.method="))
        assert row["cluster.method"] == method and row["finetune.method"] == tuned, name
        assert float(row["extract s"]) > 0 and row["extract s"] == table["q-gmm"]["extract s"], name  # cached
        assert float(row["cluster ACC"]) > 0.3, name
        if row["finetune.method"] == "none":
            assert row["finetune ACC"] == row["cluster ACC"], name
    from imageclust.compare import records

    for record in records(json.loads((project.parent / "show.json").read_text())):
        if record["experiment"] not in sweep:
            continue
        clustered, evaluated = record["metrics"]["metrics/cluster.json"], record["metrics"]["metrics/evaluate.json"]
        evaluated = evaluated["cluster"]["all"]
        assert clustered["dim"] == 64  # the pixels'
        assert evaluated["clusters_nonempty"] + evaluated["clusters_empty"] == clustered["k"]


def assert_predict_gives_the_exported_clusters(project: Path, folder: str) -> None:
    """New images, prepared digits written as PNG files, land in the clusters the run gave them."""
    import numpy as np
    from PIL import Image

    exported = list(csv.DictReader(open(project / "artifacts/export/assignments.csv")))
    pixels = np.load(project / "data/prepared/images.npy", mmap_mode="r")
    (project.parent / folder).mkdir()
    for row in exported[::50]:
        Image.fromarray(pixels[int(row["index"])][..., 0]).save(project.parent / folder / f"{row['id']}.png")
    assert predicted_clusters(project, folder)[0] == {row["id"]: row["cluster"] for row in exported[::50]}


def predicted_clusters(project: Path, folder: str, *options: str) -> tuple[dict[str, str], str]:
    """``predict``'s cluster of each image in ``folder`` (beside the project), and what it logged."""
    out = f"../{folder}{len(options)}.csv"
    result = sh(project, sys.executable, "-m", "imageclust", "predict", f"../{folder}", "--out", out, *options)
    rows = csv.DictReader(open(project / out))
    return {Path(r["path"]).stem: r["cluster"] for r in rows}, result.stdout + result.stderr


def test_bad_parameter_fails_first_and_keeps_outputs(project):
    sh(project, "dvc", "repro")
    before = {p: p.read_bytes() for p in (project / "artifacts/cluster").iterdir()}
    metrics_before = (project / "metrics/cluster.json").read_text()
    pretrained = (project / "artifacts/pretrain/encoder.pt").read_bytes()
    # a value out of range, and values that only the data shows to be wrong (1,437 training digits)
    for section, key, value, message in (
        ("cluster", "k", 1, "cluster.k=1 is invalid"),
        ("cluster", "k", 5000, "cluster.k=5000 is invalid: larger than the 1437 training samples"),
        ("data", "train_splits", ["val"], "data.train_splits=['val'] is invalid: the prepared data holds splits"),
    ):
        params = yaml.safe_load((project / "params.yaml").read_text())
        params[section][key] = value
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        try:
            failed = sh(project, "dvc", "repro", check=False)
            assert failed.returncode != 0
            assert f"error: params: {message}" in failed.stdout + failed.stderr
            assert stages_run(failed.stdout) == {"check_params"}
            assert {p: p.read_bytes() for p in (project / "artifacts/cluster").iterdir()} == before
            assert (project / "metrics/cluster.json").read_text() == metrics_before
            assert (project / "artifacts/pretrain/encoder.pt").read_bytes() == pretrained
        finally:
            sh(project, "git", "checkout", "params.yaml")
