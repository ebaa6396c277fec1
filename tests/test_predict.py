"""predict: each method's saved model sorts samples as the method did, and new image files end to end
(a folder of CIFAR-10 JPEGs from the shared archive) land in the clusters the pipeline gave them."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from fakes import frozen_run, sphere_blobs

from imageclust.errors import DataError
from imageclust.finetune.deepcluster import finetune_deepcluster
from imageclust.finetune.images import Images, embed
from imageclust.finetune.params import FinetuneParams
from imageclust.finetune.registry import METHODS
from imageclust.finetune.scan import finetune_scan
from imageclust.finetune.spectral import finetune_spectral
from imageclust.finetune.temi import finetune_temi
from imageclust.finetune.turtle import finetune_turtle
from imageclust.predict import image_paths
from imageclust.predictions import Predictions, read_cluster_names, sort_into, write_csv
from imageclust.tables import read_assignments

REPO = Path(__file__).resolve().parents[1]
CIFAR10_ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def no_dvc_repo(monkeypatch):
    import dvclive.live

    monkeypatch.setattr(dvclive.live, "get_dvc_repo", lambda: None)


def saved(result, method: str) -> dict:
    """The model as the finetune stage saves it."""
    return {"method": method, "num_clusters": 3, "trains_encoder": result.encoder is not None, **result.model}


@pytest.mark.parametrize(
    "method, finetune, block",
    [
        ("scan", finetune_scan, {"epochs": 2, "self_label_epochs": 1, "num_heads": 2, "hidden_dim": 16}),
        ("temi", finetune_temi, {"epochs": 2, "num_heads": 2, "hidden_dim": 0, "num_neighbors": 5}),
        ("turtle", finetune_turtle, {"outer_steps": 20, "restarts": 2, "pca_dim": 8, "score_folds": 3}),
    ],
)
def test_heads_on_features_assign_as_the_method_did(method, finetune, block):
    x, labels = sphere_blobs()
    train = np.arange(len(x)) % 6 != 0
    result = finetune(frozen_run(x, labels, train, 3, FinetuneParams(method=method, batch_size=32, **{method: block})))
    clusters, confidence, distance = METHODS[method].assign(saved(result, method), x)
    np.testing.assert_array_equal(clusters, result.clusters)
    np.testing.assert_allclose(confidence, result.confidence, atol=1e-5)
    assert (distance >= 0).all()
    if method != "turtle":  # TURTLE measures in its projection of the features
        assert (distance <= 2).all()  # between unit vectors and means of unit vectors


@pytest.mark.parametrize(
    "method, finetune, block",
    [
        ("deepcluster", finetune_deepcluster, {"epochs": 1, "pca_dim": 4, "augment": "none", "guard": False}),
        (
            "spectral",
            finetune_spectral,
            {
                "epochs": 1,
                "recluster_every": 1,
                "num_neighbors": 5,
                "augment": "none",
                "score_samples": 30,
                "patience": None,
                "guard": False,  # a random encoder
            },
        ),
    ],
)
def test_methods_that_train_the_encoder_assign_as_they_did(image_run, method, finetune, block):
    run = image_run(FinetuneParams(method=method, batch_size=16, **{method: block}))
    result = finetune(run)
    raw = embed(result.encoder, Images(run), np.arange(60), 32, normalize=False)  # what predict feeds them
    clusters, confidence, distance = METHODS[method].assign(saved(result, method), raw)
    # spectral fine-tuning keeps the training rows' pseudo-labels; the rows it did not train on are voted
    rows = np.flatnonzero(~run.train) if method == "spectral" else np.arange(60)
    np.testing.assert_array_equal(clusters[rows], result.clusters[rows])
    np.testing.assert_allclose(confidence[rows], result.confidence[rows], atol=1e-5)
    assert np.isfinite(distance).all()


def test_image_paths_walk_folders_and_refuse_missing(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.png", "a/b/y.JPG", "a/notes.txt", "z.png"):
        (tmp_path / name).write_bytes(b"")
    assert image_paths([tmp_path / "a", tmp_path / "z.png"]) == [
        tmp_path / "a/b/y.JPG",
        tmp_path / "a/x.png",
        tmp_path / "z.png",
    ]
    from imageclust.errors import DataError

    with pytest.raises(DataError, match="gone"):
        image_paths([tmp_path / "gone"])


# ---------------------------------------------------------------- end to end on CIFAR-10 JPEGs


def cifar_folder(root: Path, classes=("cat", "ship", "truck"), per_class: int = 30) -> Path:
    """``root/<class>/<n>.jpg``: the first images of a few classes of the shared archive's test split."""
    taken = {c: 0 for c in classes}
    with tarfile.open(CIFAR10_ARCHIVE) as archive:
        for member in archive:
            parts = Path(member.name).parts  # cifar10-jpeg/test/<class>/<n>.jpg
            if (
                member.isfile()
                and len(parts) == 4
                and parts[1] == "test"
                and taken.get(parts[2], per_class) < per_class
            ):
                target = root / parts[2] / parts[3]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
                taken[parts[2]] += 1
                if all(v == per_class for v in taken.values()):
                    break
    return root


def run_module(cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR10_ARCHIVE.exists(), reason="needs the shared CIFAR-10 archive")
def test_predict_on_cifar10_jpegs_gives_the_pipelines_clusters(tmp_path):
    images = cifar_folder(tmp_path / "photos")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")  # where predict finds the artifacts
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(name="image_folder", root=str(images), download_dir=str(tmp_path / "raw"), test_fraction=0.2)
    params["pretrain"]["method"] = "none"
    # flip_average: predict must embed new images as the stage did, each averaged with its mirror
    params["extract"].update(backbone="efficientnet_lite0", image_size=64, flip_average=True)
    params["cluster"]["k"] = 3
    params["finetune"].update(method="temi")
    params["finetune"]["temi"]["epochs"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in (
        ["download", "--out", "data/prepared", "--metrics", "metrics/download.json"],
        [
            "extract",
            "--data",
            "data/prepared",
            "--encoder",
            "artifacts/pretrain/encoder.pt",
            "--out",
            "artifacts/features",
            "--work",
            "artifacts/features-work",
        ],
        [
            "cluster",
            "--features",
            "artifacts/features",
            "--out",
            "artifacts/cluster",
            "--metrics",
            "metrics/cluster.json",
        ],
        [
            "finetune",
            "--features",
            "artifacts/features",
            "--clusters",
            "artifacts/cluster",
            "--data",
            "data/prepared",
            "--encoder",
            "artifacts/pretrain/encoder.pt",
            "--out",
            "artifacts/finetune",
            "--checkpoints",
            "artifacts/ckpt",
            "--live",
            "artifacts/live",
            "--metrics",
            "metrics/finetune.json",
        ],
    ):
        done = run_module(project, f"stages.{stage[0]}", *stage[1:])
        assert done.returncode == 0, done.stderr[-2000:]

    (images / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")  # counted, not fatal
    done = run_module(
        project, "imageclust", "predict", images, "--out", tmp_path / "pred.csv", "--sort-into", tmp_path / "sorted"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "90 images assigned, 1 could not be read" in done.stderr
    rows = {Path(r["path"]).relative_to(images).as_posix(): r for r in csv.DictReader(open(tmp_path / "pred.csv"))}
    assert rows.pop("cat/broken.jpg")["error"]
    pipeline = read_assignments(project / "artifacts/finetune/assignments.parquet")
    assert sorted(rows) == sorted(pipeline.ids.tolist())
    for sample_id, cluster, confidence in zip(pipeline.ids, pipeline.clusters, pipeline.confidence):
        assert int(rows[sample_id]["cluster"]) == cluster, sample_id
        assert float(rows[sample_id]["confidence"]) == pytest.approx(float(confidence), abs=1e-4)
        assert float(rows[sample_id]["distance"]) >= 0 and rows[sample_id]["matched_class"]
    sorted_files = sorted(p.relative_to(tmp_path / "sorted").parts[0] for p in (tmp_path / "sorted").rglob("*.jpg"))
    assert len(sorted_files) == 90 and set(sorted_files) <= {"cluster_000", "cluster_001", "cluster_002"}
    assert "models of the workspace" in done.stderr

    # the model folder the export stage writes sorts the images the same, wherever it is moved
    a = [f"--source=finetune={project / 'artifacts/finetune/assignments.parquet'}", "--prepared", "data/prepared"]
    dirs = ["--features", "artifacts/features", "--cluster", "artifacts/cluster", "--finetune", "artifacts/finetune"]
    dirs += ["--spaces", "artifacts/spaces", "--encoder", "artifacts/pretrain/encoder.pt"]
    done = run_module(project, "stages.export", *a, "--out", "artifacts/export", "--model", "artifacts/model", *dirs)
    assert done.returncode == 0, done.stderr[-2000:]
    shutil.move(project / "artifacts/model", tmp_path / "elsewhere")
    moved = run_module(tmp_path, "imageclust", "predict", images, "--out", "p4.csv", "--model", "elsewhere")
    assert moved.returncode == 0, moved.stderr[-2000:]
    assert "models of elsewhere (dataset image_folder, method temi, backbone efficientnet_lite0, k 3)" in moved.stderr
    again = {Path(r["path"]).relative_to(images).as_posix(): r for r in csv.DictReader(open(tmp_path / "p4.csv"))}
    assert {name: again[name]["cluster"] for name in rows} == {name: r["cluster"] for name, r in rows.items()}
    assert {name: again[name]["matched_class"] for name in rows} == {
        name: r["matched_class"] for name, r in rows.items()
    }

    again = run_module(
        project, "imageclust", "predict", images, "--out", tmp_path / "p2.csv", "--sort-into", tmp_path / "sorted"
    )
    assert again.returncode == 2 and "not an empty folder" in again.stderr and not (tmp_path / "p2.csv").exists()
    wrong = yaml.safe_load((project / "params.yaml").read_text())
    wrong["extract"]["backbone"] = "pixels"
    (project / "other.yaml").write_text(yaml.safe_dump(wrong))
    mismatch = run_module(
        project, "imageclust", "predict", images, "--params", "other.yaml", "--out", tmp_path / "p3.csv"
    )
    assert mismatch.returncode == 2 and "extract.backbone='pixels'" in mismatch.stderr
    assert len(mismatch.stderr.strip().splitlines()) == 1


def test_cluster_names_name_the_folders_and_the_csv_column(tmp_path):
    names = tmp_path / "names.csv"
    names.write_text("cluster,size,name\n0,5,cats\n1,3,\n2,4,big ships\n")
    assert read_cluster_names(names) == {0: "cats", 2: "big ships"}  # cluster 1 left unnamed
    images = []
    for i in range(3):
        images.append(tmp_path / f"img{i}.png")
        images[-1].write_bytes(b"png")
    clusters = np.array([0, 1, 2])
    p = Predictions(images, clusters, np.ones(3), np.zeros(3), clusters, names=read_cluster_names(names))
    sort_into(tmp_path / "sorted", p, link=False)
    assert sorted(f.relative_to(tmp_path / "sorted").as_posix() for f in (tmp_path / "sorted").rglob("*.png")) == [
        "big ships/img2.png",
        "cats/img0.png",
        "cluster_001/img1.png",
    ]
    write_csv(tmp_path / "p.csv", p)
    assert [r["name"] for r in csv.DictReader(open(tmp_path / "p.csv"))] == ["cats", "", "big ships"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("cluster,label\n0,cats\n", "needs the columns `cluster` and `name`"),
        ("cluster,name\nzero,cats\n", "line 2: cluster 'zero' is not a cluster number"),
        ("cluster,name\n0,../up\n", "line 2: name '../up' must be"),
        ("cluster,name\n0,cats\n0,dogs\n", "line 3: cluster 0 is named twice"),
        ("cluster,name\n0,cats\n1,cats\n", "two clusters share a name"),
    ],
)
def test_bad_cluster_names_are_refused_with_the_line(tmp_path, text, message):
    (tmp_path / "names.csv").write_text(text)
    with pytest.raises(DataError, match=re.escape(message)):
        read_cluster_names(tmp_path / "names.csv")
