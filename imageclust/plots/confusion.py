"""Clusters against the true classes, where labels exist: the confusion matrix (a picture, and the
rows DVC's confusion template reads) and each cluster's label distribution."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..io import atomic_path
from ..metrics import NOISE, hungarian_match
from ..tables import UNLABELED
from .common import labelled_rows, save_figure

MAX_ANNOTATED = 20  # confusion counts are written in the cells up to this many rows and columns


def ordered_confusion(labels: np.ndarray, clusters: np.ndarray, class_names: list[str]):
    """Counts (classes x clusters) of the labelled rows, columns ordered so class i's matched cluster is column i.

    Returns ``(counts, column_clusters, column_names)``. Matched columns come first in class order;
    unmatched clusters follow by id and are named ``c<id>``. When there are fewer clusters than
    classes, the classes left without a cluster simply have no column.
    """
    labels, clusters = labelled_rows(labels, clusters)
    mapping = hungarian_match(labels, clusters) if len(labels) else {}
    cluster_of_class = {cls: cluster for cluster, cls in mapping.items()}
    matched = [cluster_of_class[i] for i in range(len(class_names)) if i in cluster_of_class]
    extra = sorted(int(c) for c in np.unique(clusters) if int(c) not in mapping)
    column_clusters = matched + extra
    column_of = {c: j for j, c in enumerate(column_clusters)}
    counts = np.zeros((len(class_names), len(column_clusters)), dtype=np.int64)
    if len(labels):
        np.add.at(counts, (labels, [column_of[int(c)] for c in clusters]), 1)
    names = [class_names[mapping[c]] if c in mapping else ("noise" if c == NOISE else f"c{c}") for c in column_clusters]
    return counts, column_clusters, names


def plot_confusion(
    labels: np.ndarray, clusters: np.ndarray, class_names: list[str], path: str | Path, title: str
) -> None:
    counts, _, column_names = ordered_confusion(labels, clusters, class_names)
    n_rows, n_cols = counts.shape
    fig = Figure(figsize=(max(5.0, 0.45 * n_cols + 2.5), max(4.0, 0.4 * n_rows + 2.0)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues", aspect="auto")
    fig.colorbar(image, ax=ax, label="samples")
    ax.set_xticks(range(n_cols), column_names, rotation=45, ha="right")
    ax.set_yticks(range(n_rows), class_names)
    ax.set_xlabel("cluster (named by its matched class)")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n_rows <= MAX_ANNOTATED and n_cols <= MAX_ANNOTATED:
        dark = counts.max() / 2 if counts.size else 0
        for (i, j), count in np.ndenumerate(counts):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color="white" if count > dark else "black")
    save_figure(fig, path)


def confusion_records(labels: np.ndarray, clusters: np.ndarray, class_names: list[str]) -> list[dict]:
    """One ``{"actual", "predicted"}`` row per labelled sample, for DVC's confusion template."""
    labels, clusters = labelled_rows(labels, clusters)
    mapping = hungarian_match(labels, clusters) if len(labels) else {}
    return [
        {
            "actual": class_names[label],
            "predicted": class_names[mapping[cluster]]
            if cluster in mapping
            else ("noise" if cluster == NOISE else f"cluster {cluster}"),
        }
        for label, cluster in zip(labels.tolist(), clusters.tolist())
    ]


def write_confusion_csv(records: list[dict], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["actual", "predicted"])
            writer.writeheader()
            writer.writerows(records)


def write_cluster_labels_csv(
    labels: np.ndarray, clusters: np.ndarray, class_names: list[str], path: str | Path
) -> None:
    """One row per cluster: its size, labelled members, matched class, that class's share, then the
    count of each class among its members (the MoCo system's per-cluster label distribution)."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    labelled = labels != UNLABELED
    mapping = hungarian_match(labels[labelled], clusters[labelled]) if labelled.any() else {}
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["cluster", "size", "labelled", "matched_class", "matched_share", *class_names])
            for cluster in sorted(np.unique(clusters).tolist()):
                members = clusters == cluster
                known = labels[members & labelled]
                counts = (
                    np.bincount(known, minlength=len(class_names))
                    if len(known)
                    else np.zeros(len(class_names), dtype=np.int64)
                )
                matched = mapping.get(cluster)
                share = f"{counts[matched] / len(known):.4f}" if matched is not None and len(known) else ""
                writer.writerow(
                    [
                        "noise" if cluster == NOISE else cluster,
                        int(members.sum()),
                        len(known),
                        class_names[matched] if matched is not None else "",
                        share,
                        *counts.tolist(),
                    ]
                )
