"""The 2-D map of the features (t-SNE, UMAP or PCA), coloured by cluster and by class, and the same
map with images at their points."""

from __future__ import annotations

from pathlib import Path

import matplotlib.patches
import numpy as np
from matplotlib.figure import Figure

from ..clustering.preprocess import torch_threads_kept
from ..metrics import NOISE
from ..tables import UNLABELED
from .common import MAX_LEGEND, category_colors, cluster_colour_indices, save_figure

TSNE_INPUT_DIM = 50


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
    if method not in ("tsne", "umap"):
        raise ValueError(f"unknown embedding method {method!r}; allowed: pca, tsne, umap")
    # cosine geometry is what the clustering sees, so t-SNE and UMAP run on unit vectors
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if method == "umap":
        import umap

        model = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed, n_jobs=1)
        with torch_threads_kept():
            return indices, model.fit_transform(x)
    if x.shape[1] > TSNE_INPUT_DIM:
        # PCA first removes noise dimensions and makes t-SNE's neighbour search much cheaper
        x = PCA(n_components=min(TSNE_INPUT_DIM, len(x)), random_state=seed).fit_transform(x)
    perplexity = min(30.0, (len(x) - 1) / 3)  # t-SNE needs perplexity < n_samples
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity)
    return indices, tsne.fit_transform(x)


def _scatter_by_category(
    ax, coords: np.ndarray, categories: np.ndarray, names: dict[int, str], colour_of: dict[int, int], n_colours: int
) -> None:
    # colour by a fixed index per category, so a class or cluster keeps its colour whichever subsample is drawn
    values = sorted(int(v) for v in np.unique(categories))
    colors = category_colors(max(n_colours, *(colour_of.get(v, v) + 1 for v in values)))
    for value in values:
        at = categories == value
        ax.scatter(
            coords[at, 0],
            coords[at, 1],
            s=8,
            color=colors[colour_of.get(value, value)],
            label=names.get(value, str(value)),
            alpha=0.8,
        )
    if len(values) <= MAX_LEGEND:
        ax.legend(fontsize=7, markerscale=2, loc="best", framealpha=0.7)


def plot_embedding(
    coords: np.ndarray,
    clusters: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    path: str | Path,
    method: str,
    source: str = "cluster",
) -> None:
    """The 2-D map twice: coloured by cluster and by true class (``clusters``, ``labels``: per point); a
    cluster takes its matched class's colour, so the two panels compare by eye."""
    clusters, labels = np.asarray(clusters), np.asarray(labels)
    colour_of = cluster_colour_indices(clusters, labels, len(class_names))
    fig = Figure(figsize=(13.0, 6.0), layout="constrained")
    by_cluster, by_class = fig.subplots(1, 2)
    fig.suptitle(f"{method.upper()} of {len(coords)} samples")
    noise = clusters == NOISE
    if noise.any():
        by_cluster.scatter(coords[noise, 0], coords[noise, 1], s=6, color="lightgrey", label="noise")
    if (~noise).any():
        _scatter_by_category(
            by_cluster,
            coords[~noise],
            clusters[~noise],
            {int(c): f"c{int(c)}" for c in np.unique(clusters[~noise])},
            colour_of,
            len(class_names),
        )
    by_cluster.set_title(f"coloured by {source} cluster")
    labelled = labels != UNLABELED
    if labelled.any():
        if not labelled.all():
            by_class.scatter(coords[~labelled, 0], coords[~labelled, 1], s=6, color="lightgrey", label="unlabeled")
        _scatter_by_category(
            by_class, coords[labelled], labels[labelled], dict(enumerate(class_names)), {}, len(class_names)
        )
        by_class.set_title("coloured by true class")
    else:
        by_class.text(0.5, 0.5, "no labels", ha="center", va="center", fontsize=14, transform=by_class.transAxes)
        by_class.set_title("true class")
    for ax in (by_cluster, by_class):
        ax.set_xlabel(f"{method} 1")
        ax.set_ylabel(f"{method} 2")
    save_figure(fig, path)


def thumbnail_points(coords: np.ndarray, cells: int, seed: int) -> np.ndarray:
    """Indices of the points that get an image on the map, an image being 1/``cells`` of the map's
    width and height: points are taken in a seeded random order, each unless its image would
    overlap one already taken, so the images spread over the map without covering each other."""
    if len(coords) == 0:
        return np.zeros(0, dtype=np.int64)
    low, high = coords.min(0), coords.max(0)
    unit = (coords - low) / np.maximum(high - low, 1e-12) * cells  # one image is 1 x 1 here
    taken: dict[tuple[int, int], list[int]] = {}
    picked = []
    for i in np.random.default_rng(seed).permutation(len(coords)).tolist():
        cx, cy = int(unit[i, 0]), int(unit[i, 1])
        near = (j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in taken.get((cx + dx, cy + dy), ()))
        if all(np.abs(unit[j] - unit[i]).max() >= 1.0 for j in near):
            taken.setdefault((cx, cy), []).append(i)
            picked.append(i)
    return np.sort(np.array(picked, dtype=np.int64))


def plot_thumbnail_map(
    coords: np.ndarray,
    clusters: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    picked: np.ndarray,
    thumbnails: np.ndarray,
    path: str | Path,
    method: str,
    cells: int,
    source: str = "cluster",
) -> None:
    """The 2-D map with the images of the ``picked`` points drawn at their places, framed in their
    cluster's colour, as on the map coloured by cluster (``thumbnails``: uint8 RGB tiles of the picked
    points, in the same order)."""
    clusters = np.asarray(clusters)
    colour_of = cluster_colour_indices(clusters, labels, n_classes)
    colors = category_colors(max(n_classes, *(i + 1 for i in colour_of.values()), 1))
    fig = Figure(figsize=(12.0, 12.0), layout="constrained")
    ax = fig.add_subplot()
    low, high = coords.min(0), coords.max(0)
    span = np.maximum(high - low, 1e-12)
    half = span / cells / 2 * 0.95
    point_colors = np.array([colors[colour_of[c]] if c != NOISE else (0.8, 0.8, 0.8, 1.0) for c in clusters])
    ax.scatter(coords[:, 0], coords[:, 1], s=3, c=point_colors, alpha=0.3)
    for i, tile in zip(picked.tolist(), thumbnails):
        x, y = coords[i]
        ax.imshow(tile, extent=(x - half[0], x + half[0], y - half[1], y + half[1]), interpolation="nearest", zorder=3)
        color = colors[colour_of[int(clusters[i])]] if clusters[i] != NOISE else (0.6, 0.6, 0.6, 1.0)
        ax.add_patch(
            matplotlib.patches.Rectangle(
                (x - half[0], y - half[1]),
                2 * half[0],
                2 * half[1],
                fill=False,
                edgecolor=color,
                linewidth=1.5,
                zorder=4,
            )
        )
    ax.set_xlim(low[0] - span[0] * 0.03, high[0] + span[0] * 0.03)
    ax.set_ylim(low[1] - span[1] * 0.03, high[1] + span[1] * 0.03)
    ax.set_aspect("auto")
    ax.set_title(
        f"{method.upper()} of {len(coords)} samples, {len(picked)} shown as images (frame: {source} cluster colour)"
    )
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    save_figure(fig, path)
