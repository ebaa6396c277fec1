"""Plot stage: every figure is a readable PNG, confusion columns follow the matching, the stage runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml
from fakes import CLASSES, PLOT_PARAMS, make_inputs, plot_blobs, write_curve

from imageclust.plots.common import cluster_colour_indices
from imageclust.plots.confusion import (
    confusion_records,
    ordered_confusion,
    plot_confusion,
    write_cluster_labels_csv,
    write_confusion_csv,
)
from imageclust.plots.curves import plot_training_curves, read_curve
from imageclust.plots.embedding import embed_2d, plot_embedding, plot_thumbnail_map, thumbnail_points
from imageclust.plots.sizes import plot_cluster_sizes, write_cluster_sizes_csv
from imageclust.plots.stage import make_all_plots
from imageclust.tables import UNLABELED

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_side: int = 50) -> None:
    """A valid PNG of sensible size that is not one flat colour."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] >= min_side and pixels.shape[1] >= min_side, pixels.shape
    assert pixels[..., :3].std() > 0.02, f"{path.name} is blank"


def test_confusion_columns_follow_matched_clusters(tmp_path):
    labels = np.repeat(np.arange(3), 10)
    clusters = np.array([2, 0, 1])[labels]  # class 0 -> cluster 2, class 1 -> cluster 0, class 2 -> cluster 1
    counts, column_clusters, names = ordered_confusion(labels, clusters, CLASSES)
    assert column_clusters == [2, 0, 1]
    assert names == CLASSES
    np.testing.assert_array_equal(counts, np.diag([10, 10, 10]))
    plot_confusion(labels, clusters, CLASSES, tmp_path / "c.png", title="permuted")
    assert_png(tmp_path / "c.png")


def test_confusion_with_more_clusters_than_classes_and_unlabelled_rows(tmp_path):
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, UNLABELED, UNLABELED])
    clusters = np.array([3, 3, 1, 0, 0, 4, 2, 2, 5, 5])
    counts, column_clusters, names = ordered_confusion(labels, clusters, CLASSES)
    assert column_clusters[:3] == [3, 0, 2]
    assert sorted(column_clusters[3:]) == column_clusters[3:] == [1, 4]  # extras by id; 5 is only unlabelled
    assert names == ["zero", "one", "two", "c1", "c4"]
    assert counts.sum() == 8
    assert counts.tolist() == [[2, 0, 0, 1, 0], [0, 2, 0, 0, 1], [0, 0, 2, 0, 0]]
    plot_confusion(labels, clusters, CLASSES, tmp_path / "c.png", title="extra clusters")
    assert_png(tmp_path / "c.png")


def test_confusion_records_and_csv(tmp_path):
    # unique best matching: cluster 1 -> cat, cluster 0 -> dog; cluster 7 is surplus
    labels = np.array([0, 0, 1, 1, 1, UNLABELED, 0])
    clusters = np.array([1, 1, 0, 0, 7, 0, 0])
    records = confusion_records(labels, clusters, ["cat", "dog"])
    assert records == [
        {"actual": "cat", "predicted": "cat"},
        {"actual": "cat", "predicted": "cat"},
        {"actual": "dog", "predicted": "dog"},
        {"actual": "dog", "predicted": "dog"},
        {"actual": "dog", "predicted": "cluster 7"},
        {"actual": "cat", "predicted": "dog"},
    ]
    write_confusion_csv(records, tmp_path / "c.csv")
    lines = (tmp_path / "c.csv").read_text().splitlines()
    assert lines[0] == "actual,predicted"
    assert lines[1:] == ["cat,cat", "cat,cat", "dog,dog", "dog,dog", "dog,cluster 7", "cat,dog"]


def test_cluster_sizes(tmp_path):
    plot_cluster_sizes(
        {"cluster": np.array([0, 0, 1, 2, 2, 2]), "finetune": np.array([0, 1, 1, 1, 1, 1])}, tmp_path / "s.png", k=4
    )
    assert_png(tmp_path / "s.png")


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_embed_2d_is_deterministic_and_subsamples(method):
    vectors, _ = plot_blobs(dim=64)
    first_idx, first = embed_2d(vectors, method, max_points=40, seed=3)
    second_idx, second = embed_2d(vectors, method, max_points=40, seed=3)
    assert first.shape == (40, 2) and len(set(first_idx.tolist())) == 40
    np.testing.assert_array_equal(first_idx, second_idx)
    np.testing.assert_array_equal(first, second)
    other_idx, _ = embed_2d(vectors, method, max_points=40, seed=4)
    assert not np.array_equal(first_idx, other_idx)


def test_a_cluster_takes_its_matched_class_colour():
    # clusters 7 and 3 hold classes 0 and 1; cluster 5 is what is left over; -1 is noise
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0, UNLABELED])
    clusters = np.array([7, 7, 7, 3, 3, 3, 5, -1, 5])
    assert cluster_colour_indices(clusters, labels, n_classes=2) == {7: 0, 3: 1, 5: 2}
    # with more classes than any cluster matched, the leftover colour comes after every class's
    assert cluster_colour_indices(clusters, labels, n_classes=4)[5] == 4
    assert cluster_colour_indices(clusters, np.full(9, UNLABELED), n_classes=2) == {3: 3, 5: 5, 7: 7}


def test_cluster_sizes_csv(tmp_path):
    write_cluster_sizes_csv(
        {"cluster": np.array([0, 0, 1, 2, 2, 2, -1]), "finetune": np.array([1, 1, 1, 1])}, tmp_path / "s.csv", 3
    )
    assert (tmp_path / "s.csv").read_text().splitlines() == ["rank,cluster,finetune", "1,3,4", "2,2,0", "3,1,0"]


def test_embedding_plot_with_and_without_labels(tmp_path):
    vectors, labels = plot_blobs()
    picked, coords = embed_2d(vectors, "pca", max_points=50, seed=0)
    plot_embedding(coords, labels[picked], labels[picked], CLASSES, tmp_path / "e.png", "pca")
    assert_png(tmp_path / "e.png")
    no_labels = np.full(len(picked), UNLABELED)
    plot_embedding(coords, labels[picked], no_labels, CLASSES, tmp_path / "n.png", "pca")
    assert_png(tmp_path / "n.png")


def test_thumbnail_points_cover_the_map_without_overlap():
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 100, size=(2000, 2))
    picked = thumbnail_points(coords, cells=10, seed=1)
    np.testing.assert_array_equal(picked, thumbnail_points(coords, cells=10, seed=1))
    unit = coords[picked] / (coords.max(0) - coords.min(0)) * 10  # one image is 1 x 1 here
    gaps = np.abs(unit[:, None] - unit[None]).max(-1) + np.eye(len(picked)) * 10
    assert gaps.min() >= 1.0  # no two images overlap
    assert len(picked) >= 30  # and a 10 x 10 map is well covered (at most 100 would fit exactly)
    assert len(thumbnail_points(coords[:1], cells=10, seed=0)) == 1


def test_thumbnail_map(tmp_path):
    vectors, labels = plot_blobs()
    _, coords = embed_2d(vectors, "pca", max_points=60, seed=0)
    picked = thumbnail_points(coords, cells=8, seed=0)
    thumbnails = np.random.default_rng(0).integers(0, 255, size=(len(picked), 16, 16, 3), dtype=np.uint8)
    plot_thumbnail_map(coords, labels, labels, 3, picked, thumbnails, tmp_path / "m.png", "pca", cells=8)
    assert_png(tmp_path / "m.png")


def test_cluster_labels_csv_by_hand(tmp_path):
    labels = np.array([0, 0, 0, 1, 1, 2, UNLABELED, 2])
    clusters = np.array([1, 1, 0, 0, 0, 2, 2, 2])
    write_cluster_labels_csv(labels, clusters, CLASSES, tmp_path / "c.csv")
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert rows == [
        "cluster,size,labelled,matched_class,matched_share,zero,one,two",
        "0,3,3,one,0.6667,1,2,0",  # cluster 0 holds one "zero" and two "one"
        "1,2,2,zero,1.0000,2,0,0",
        "2,3,2,two,1.0000,0,0,2",  # its unlabelled member is counted in size only
    ]


def test_training_curves(tmp_path, caplog):
    write_curve(tmp_path / "loss.tsv", "loss", [2.0, 1.5, 1.2, 1.1])
    assert read_curve(tmp_path / "loss.tsv")[0] == "loss"
    np.testing.assert_array_equal(read_curve(tmp_path / "loss.tsv")[1], [0, 1, 2, 3])
    plot_training_curves({"pretrain_loss": tmp_path / "loss.tsv", "gone": tmp_path / "missing.tsv"}, tmp_path / "t.png")
    assert_png(tmp_path / "t.png")
    assert "missing.tsv" in caplog.text
    plot_training_curves({"gone": tmp_path / "missing.tsv"}, tmp_path / "none.png")
    assert_png(tmp_path / "none.png")


@pytest.mark.parametrize("labelled", [True, False])
def test_make_all_plots(tmp_path, labelled):
    inputs = make_inputs(tmp_path, labelled)
    write_curve(tmp_path / "loss.tsv", "loss", [1.0, 0.5])
    (tmp_path / "evaluate.json").write_text(json.dumps({"finetune": {"all": {"n": 60, "acc": 1.0}}}))
    make_all_plots(
        inputs["features"],
        inputs["sources"],
        inputs["prepared"],
        {"loss": tmp_path / "loss.tsv"},
        tmp_path / "report",
        PLOT_PARAMS,
        seed=0,
        metrics={"evaluate": tmp_path / "evaluate.json"},
        data_dir=tmp_path / "plots",
    )
    expected = {
        "cluster_sizes.png",
        "embedding.png",
        "embedding_thumbnails.png",
        "training_curves.png",
        "overview.png",
        "report.html",
        "sheets",
        "k_curve.png",
    }
    expected |= {
        f"confusion_{s}.{ext}" for s in ("cluster", "finetune") for ext in ("png", "csv")
    }  # notes if unlabelled
    assert {p.name for p in (tmp_path / "report").iterdir()} == expected
    # dvc.yaml declares each of them as an output of the plot stage
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["plot"]
    declared = {Path(o).name for o in stage["outs"] if isinstance(o, str) and o.startswith("${paths.report}/")}
    assert declared == expected
    # what goes to git: a few rows per cluster, nothing per sample
    small = {"cluster_sizes.csv", "cluster_labels_cluster.csv", "cluster_labels_finetune.csv"}
    assert {p.name for p in (tmp_path / "plots").iterdir()} == small
    sizes = (tmp_path / "plots" / "cluster_sizes.csv").read_text().splitlines()
    assert sizes[0] == "rank,cluster,finetune" and len(sizes) == 4
    assert sorted(p.name for p in (tmp_path / "report" / "sheets").iterdir()) == [
        "cluster_000.png",
        "cluster_001.png",
        "cluster_002.png",
    ]
    for png in (tmp_path / "report").rglob("*.png"):
        assert_png(png)
    report = (tmp_path / "report" / "report.html").read_text()
    # every picture but the notes: that K was given, and without labels that there is no confusion
    assert report.count("<img ") == len(list((tmp_path / "report").rglob("*.png"))) - (1 if labelled else 3)
    assert "Choice of K" not in report
    assert "http://" not in report and "https://" not in report  # nothing to fetch
    if labelled:  # ids joined correctly: every sample lands on its matched class
        rows = (tmp_path / "report" / "confusion_cluster.csv").read_text().splitlines()[1:]
        assert len(rows) == 60 and all(a == p for a, p in (r.split(",") for r in rows))


def run_stage_script(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / "plot.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def stage_args(inputs: dict) -> list[str]:
    return [
        "--features",
        str(inputs["features"]),
        "--prepared",
        str(inputs["prepared"]),
        *(a for name, p in inputs["sources"].items() for a in ("--source", f"{name}={p}")),
        "--curve",
        "pretrain_loss=live/plots/metrics/loss.tsv",
        "--out",
        "report",
        "--data",
        "plots",
    ]


def test_stage_end_to_end(tmp_path):
    inputs = make_inputs(tmp_path)
    write_curve(tmp_path / "live" / "plots" / "metrics" / "loss.tsv", "loss", [3.0, 2.0, 1.5])
    (tmp_path / "params.yaml").write_text("seed: 1\nplot:\n  embedding: tsne\n  max_points: 40\n")
    result = run_stage_script(tmp_path, *stage_args(inputs))
    assert result.returncode == 0, result.stderr
    names = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"confusion_cluster.csv", "confusion_finetune.png", "embedding.png", "training_curves.png"} <= names
    assert {p.name for p in (tmp_path / "plots").iterdir()} >= {"cluster_sizes.csv", "cluster_labels_finetune.csv"}


def test_stage_missing_input_fails_cleanly(tmp_path):
    inputs = make_inputs(tmp_path)
    inputs["sources"]["finetune"] = tmp_path / "absent.parquet"
    (tmp_path / "params.yaml").write_text("plot:\n  embedding: pca\n")
    result = run_stage_script(tmp_path, *stage_args(inputs))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "absent.parquet" in result.stderr
    assert not any(p.name.startswith(("plots", ".plots", "report", ".report")) for p in tmp_path.iterdir())
