"""Figures for the plot stage: confusion against true classes, cluster sizes, a 2-D embedding, training curves.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so no GUI backend or global
figure state is involved: ``savefig(format="png")`` renders through Agg, which works headless.
Every PNG is written under a temporary name and renamed into place (``atomic_path``).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from .errors import DataError
from .io import atomic_dir, atomic_path, read_json
from .metrics import NOISE, hungarian_match
from .tables import UNLABELED, read_assignments, read_features

log = logging.getLogger(__name__)

DPI = 120
MAX_ANNOTATED = 20  # confusion counts are written in the cells up to this many rows and columns
MAX_LEGEND = 20  # above this many categories a legend hides the plot, so it is left out
TSNE_INPUT_DIM = 50


def _save(fig: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        # the temporary name ends in .tmp, so the format cannot be inferred from it
        fig.savefig(tmp, format="png", dpi=DPI)


def _category_colors(n: int) -> np.ndarray:
    if n <= 10:
        return colormaps["tab10"](np.arange(n))
    if n <= 20:
        return colormaps["tab20"](np.arange(n))
    return colormaps["turbo"](np.linspace(0.0, 1.0, n))


def _labelled(labels: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.asarray(labels) != UNLABELED
    return np.asarray(labels)[keep].astype(np.int64), np.asarray(clusters)[keep].astype(np.int64)


# --- confusion -------------------------------------------------------------------------------------


def ordered_confusion(labels: np.ndarray, clusters: np.ndarray, class_names: list[str]):
    """Counts (classes x clusters) of the labelled rows, columns ordered so class i's matched cluster is column i.

    Returns ``(counts, column_clusters, column_names)``. Matched columns come first in class order;
    unmatched clusters follow by id and are named ``c<id>``. When there are fewer clusters than
    classes, the classes left without a cluster simply have no column.
    """
    labels, clusters = _labelled(labels, clusters)
    mapping = hungarian_match(labels, clusters) if len(labels) else {}
    cluster_of_class = {cls: cluster for cluster, cls in mapping.items()}
    matched = [cluster_of_class[i] for i in range(len(class_names)) if i in cluster_of_class]
    extra = sorted(int(c) for c in np.unique(clusters) if int(c) not in mapping)
    column_clusters = matched + extra
    column_of = {c: j for j, c in enumerate(column_clusters)}
    counts = np.zeros((len(class_names), len(column_clusters)), dtype=np.int64)
    if len(labels):
        np.add.at(counts, (labels, [column_of[int(c)] for c in clusters]), 1)
    names = [class_names[mapping[c]] if c in mapping else ("noise" if c == NOISE else f"c{c}")
             for c in column_clusters]
    return counts, column_clusters, names


def plot_confusion(labels: np.ndarray, clusters: np.ndarray, class_names: list[str], path: str | Path,
                   title: str) -> None:
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
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > dark else "black")
    _save(fig, path)


def confusion_records(labels: np.ndarray, clusters: np.ndarray, class_names: list[str]) -> list[dict]:
    """One ``{"actual", "predicted"}`` row per labelled sample, for DVC's confusion template."""
    labels, clusters = _labelled(labels, clusters)
    mapping = hungarian_match(labels, clusters) if len(labels) else {}
    return [
        {"actual": class_names[label],
         "predicted": class_names[mapping[cluster]] if cluster in mapping
         else ("noise" if cluster == NOISE else f"cluster {cluster}")}
        for label, cluster in zip(labels.tolist(), clusters.tolist())
    ]


def write_confusion_csv(records: list[dict], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["actual", "predicted"])
            writer.writeheader()
            writer.writerows(records)


# --- cluster sizes ---------------------------------------------------------------------------------


def plot_cluster_sizes(sources: dict[str, np.ndarray], path: str | Path, k: int) -> None:
    """Side-by-side bars of each source's cluster sizes, largest first, against the uniform size n/k."""
    sources = {name: np.asarray(c, dtype=np.int64) for name, c in sources.items()}
    noise = {name: int((c == NOISE).sum()) for name, c in sources.items()}
    sizes = {name: np.sort(np.bincount(c[c != NOISE], minlength=k))[::-1] for name, c in sources.items()}
    n_bars = max([k, *(len(s) for s in sizes.values())])
    width = 0.8 / max(len(sizes), 1)
    fig = Figure(figsize=(max(6.0, 0.35 * n_bars + 2.0), 4.0), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, size) in enumerate(sizes.items()):
        ax.bar(np.arange(len(size)) + (i - (len(sizes) - 1) / 2) * width, size, width, label=name)
        ax.axhline(size.sum() / k, color="grey", linestyle="--", linewidth=1)
    if n_bars <= 40:  # beyond that, matplotlib's automatic ticks stay readable
        ax.set_xticks(range(n_bars), [str(r + 1) for r in range(n_bars)])
    ax.set_xlabel("cluster rank (largest first)")
    ax.set_ylabel("samples")
    noted = ", ".join(f"{name}: {count} noise" for name, count in noise.items() if count)
    ax.set_title(f"Cluster sizes (k={k}; dashed: uniform n/k)" + (f"; {noted}" if noted else ""))
    if sizes:
        ax.legend()
    _save(fig, path)


# --- embedding -------------------------------------------------------------------------------------


def embed_2d(vectors: np.ndarray, method: str, max_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """2-D coordinates of a seeded subsample of at most ``max_points`` rows: ``(row indices, coords)``."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    vectors = np.asarray(vectors, dtype=np.float64)
    n = len(vectors)
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(n, max_points, replace=False)) if n > max_points else np.arange(n)
    x = vectors[indices]
    if len(x) < 4 or x.shape[1] < 2:
        # too few rows or dimensions for PCA / t-SNE: show the raw first coordinates
        coords = np.zeros((len(x), 2))
        coords[:, : min(2, x.shape[1])] = x[:, :2]
        return indices, coords
    if method == "pca":
        return indices, PCA(n_components=2, random_state=seed).fit_transform(x)
    if method != "tsne":
        raise ValueError(f"unknown embedding method {method!r}; allowed: pca, tsne")
    # cosine geometry is what the clustering sees, so t-SNE runs on unit vectors
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if x.shape[1] > TSNE_INPUT_DIM:
        # PCA first removes noise dimensions and makes t-SNE's neighbour search much cheaper
        x = PCA(n_components=min(TSNE_INPUT_DIM, len(x)), random_state=seed).fit_transform(x)
    perplexity = min(30.0, (len(x) - 1) / 3)  # t-SNE needs perplexity < n_samples
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity)
    return indices, tsne.fit_transform(x)


def _scatter_by_category(ax, coords: np.ndarray, categories: np.ndarray, names: dict[int, str],
                         n_categories: int) -> None:
    # colour by category index, so a class or cluster keeps its colour whichever subsample is drawn
    values = sorted(int(v) for v in np.unique(categories))
    colors = _category_colors(max(n_categories, values[-1] + 1))
    for value in values:
        at = categories == value
        ax.scatter(coords[at, 0], coords[at, 1], s=8, color=colors[value], label=names.get(value, str(value)),
                   alpha=0.8)
    if len(values) <= MAX_LEGEND:
        ax.legend(fontsize=7, markerscale=2, loc="best", framealpha=0.7)


def plot_embedding(vectors: np.ndarray, clusters: np.ndarray, labels: np.ndarray, class_names: list[str],
                   path: str | Path, method: str, max_points: int, seed: int, source: str = "cluster") -> None:
    indices, coords = embed_2d(vectors, method, max_points, seed)
    clusters, labels = np.asarray(clusters)[indices], np.asarray(labels)[indices]
    fig = Figure(figsize=(13.0, 6.0), layout="constrained")
    by_cluster, by_class = fig.subplots(1, 2)
    fig.suptitle(f"{method.upper()} of {len(indices)} samples")
    noise = clusters == NOISE
    if noise.any():
        by_cluster.scatter(coords[noise, 0], coords[noise, 1], s=6, color="lightgrey", label="noise")
    if (~noise).any():
        _scatter_by_category(by_cluster, coords[~noise], clusters[~noise],
                             {int(c): f"c{int(c)}" for c in np.unique(clusters[~noise])}, int(clusters.max()) + 1)
    by_cluster.set_title(f"coloured by {source} cluster")
    labelled = labels != UNLABELED
    if labelled.any():
        if not labelled.all():
            by_class.scatter(coords[~labelled, 0], coords[~labelled, 1], s=6, color="lightgrey", label="unlabeled")
        _scatter_by_category(by_class, coords[labelled], labels[labelled], dict(enumerate(class_names)),
                             len(class_names))
        by_class.set_title("coloured by true class")
    else:
        by_class.text(0.5, 0.5, "no labels", ha="center", va="center", fontsize=14, transform=by_class.transAxes)
        by_class.set_title("true class")
    for ax in (by_cluster, by_class):
        ax.set_xlabel(f"{method} 1")
        ax.set_ylabel(f"{method} 2")
    _save(fig, path)


# --- the choice of K -------------------------------------------------------------------------------


def plot_k_curve(csv_path: str | Path, path: str | Path) -> None:
    """The label-free score of every candidate K (``cluster.k: auto``), the chosen one marked."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"{csv_path}: no candidate K")
    ks = np.array([int(r["k"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    chosen = np.array([r["chosen"] == "1" for r in rows])
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(ks, scores, marker="o")
    ax.plot(ks[chosen], scores[chosen], marker="*", markersize=16, linestyle="none", color="tab:red",
            label=f"chosen: K={ks[chosen][0]}" if chosen.any() else None)
    ax.set_xlabel("K")
    ax.set_ylabel(rows[0]["criterion"])
    ax.set_title("choice of K without labels")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    if chosen.any():
        ax.legend()
    _save(fig, path)


# --- training curves -------------------------------------------------------------------------------


def read_curve(path: str | Path) -> tuple[str, np.ndarray, np.ndarray]:
    """Read one DVCLive metric history (TSV: [timestamp,] step, <metric>): ``(metric name, steps, values)``."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        value_columns = [c for c in reader.fieldnames or [] if c not in ("step", "timestamp")]
        if "step" not in (reader.fieldnames or []) or len(value_columns) != 1:
            raise DataError(f"{path}: not a DVCLive metric file (header {reader.fieldnames})")
        rows = [(int(r["step"]), float(r[value_columns[0]])) for r in reader if r.get(value_columns[0])]
    steps, values = zip(*rows) if rows else ((), ())
    return value_columns[0], np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)


def plot_training_curves(curves: dict[str, Path], path: str | Path) -> None:
    present = {}
    for name, curve_path in curves.items():
        if Path(curve_path).is_file():
            present[name] = read_curve(curve_path)
        else:
            log.warning("training curve %s: %s not found, skipped", name, curve_path)
    if not present:
        fig = Figure(figsize=(6.0, 3.0), layout="constrained")
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no training curves", ha="center", va="center", fontsize=14)
        ax.set_axis_off()
        _save(fig, path)
        return
    n_cols = min(len(present), 3)
    n_rows = math.ceil(len(present) / n_cols)
    fig = Figure(figsize=(5.0 * n_cols, 3.8 * n_rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols)).ravel()
    for ax, (name, (metric, steps, values)) in zip(axes, present.items()):
        ax.plot(steps, values, marker="." if len(steps) < 50 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    for ax in axes[len(present):]:
        ax.set_axis_off()
    _save(fig, path)


# --- the stage -------------------------------------------------------------------------------------


def make_all_plots(features_dir: str | Path, sources: dict[str, Path], prepared_meta: str | Path,
                   curves: dict[str, Path], out_dir: str | Path, params, seed: int,
                   k_curve: str | Path | None = None) -> None:
    """Write every figure into a fresh ``out_dir``, swapped into place only when all succeed.

    ``sources`` maps a name to an assignments parquet; the embedding is coloured by the last one.
    """
    if not sources:
        raise ValueError("make_all_plots needs at least one source of assignments")
    class_names = list(read_json(prepared_meta)["classes"])
    assignments = {name: read_assignments(p) for name, p in sources.items()}
    features = read_features(features_dir)

    last_name, last = list(assignments.items())[-1]
    # assignments and features are joined on ids: their row orders need not agree
    row_of_id = {sample_id: i for i, sample_id in enumerate(features.ids.tolist())}
    feature_rows = np.array([row_of_id.get(i, -1) for i in last.ids.tolist()], dtype=np.int64)
    found = feature_rows >= 0
    if not found.any():
        raise DataError(f"{sources[last_name]}: none of its sample ids are in {features_dir}")
    if not found.all():
        log.warning("%s: %d of %d ids are not in %s; left out of the embedding",
                    last_name, int((~found).sum()), len(found), features_dir)

    k = max(1, *((a.num_clusters or int(a.clusters.max()) + 1) if len(a) else 0 for a in assignments.values()))
    with atomic_dir(out_dir) as tmp:
        for name, a in assignments.items():
            if not (a.labels != UNLABELED).any():
                log.info("%s: no labelled samples, confusion skipped", name)
                continue
            plot_confusion(a.labels, a.clusters, class_names, tmp / f"confusion_{name}.png",
                           title=f"{name}: true class vs cluster")
            write_confusion_csv(confusion_records(a.labels, a.clusters, class_names), tmp / f"confusion_{name}.csv")
        plot_cluster_sizes({name: a.clusters for name, a in assignments.items()}, tmp / "cluster_sizes.png", k)
        plot_embedding(features.vectors[feature_rows[found]], last.clusters[found], last.labels[found], class_names,
                       tmp / "embedding.png", params.embedding, params.max_points, seed, source=last_name)
        plot_training_curves(curves, tmp / "training_curves.png")
        if k_curve is not None and Path(k_curve).is_file():  # only when the cluster stage chose K
            plot_k_curve(k_curve, tmp / "k_curve.png")
