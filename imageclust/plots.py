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

import matplotlib.patches
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
    if method not in ("tsne", "umap"):
        raise ValueError(f"unknown embedding method {method!r}; allowed: pca, tsne, umap")
    # cosine geometry is what the clustering sees, so t-SNE and UMAP run on unit vectors
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if method == "umap":
        import umap

        from .clustering.preprocess import torch_threads_kept

        model = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed, n_jobs=1)
        with torch_threads_kept():
            return indices, model.fit_transform(x)
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


def plot_embedding(coords: np.ndarray, clusters: np.ndarray, labels: np.ndarray, class_names: list[str],
                   path: str | Path, method: str, source: str = "cluster") -> None:
    """The 2-D map twice: coloured by cluster and by true class (``clusters``, ``labels``: per point)."""
    clusters, labels = np.asarray(clusters), np.asarray(labels)
    fig = Figure(figsize=(13.0, 6.0), layout="constrained")
    by_cluster, by_class = fig.subplots(1, 2)
    fig.suptitle(f"{method.upper()} of {len(coords)} samples")
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


def plot_thumbnail_map(coords: np.ndarray, clusters: np.ndarray, picked: np.ndarray, thumbnails: np.ndarray,
                       path: str | Path, method: str, cells: int, source: str = "cluster") -> None:
    """The 2-D map with the images of the ``picked`` points drawn at their places, framed in their
    cluster's colour (``thumbnails``: uint8 RGB tiles of the picked points, in the same order)."""
    clusters = np.asarray(clusters)
    colors = _category_colors(max(int(clusters.max()) + 1, 1))
    fig = Figure(figsize=(12.0, 12.0), layout="constrained")
    ax = fig.add_subplot()
    low, high = coords.min(0), coords.max(0)
    span = np.maximum(high - low, 1e-12)
    half = span / cells / 2 * 0.95
    point_colors = np.array([colors[c] if c != NOISE else (0.8, 0.8, 0.8, 1.0) for c in clusters])
    ax.scatter(coords[:, 0], coords[:, 1], s=3, c=point_colors, alpha=0.3)
    for i, tile in zip(picked.tolist(), thumbnails):
        x, y = coords[i]
        ax.imshow(tile, extent=(x - half[0], x + half[0], y - half[1], y + half[1]), interpolation="nearest",
                  zorder=3)
        color = colors[clusters[i]] if clusters[i] != NOISE else (0.6, 0.6, 0.6, 1.0)
        ax.add_patch(matplotlib.patches.Rectangle((x - half[0], y - half[1]), 2 * half[0], 2 * half[1], fill=False,
                                                  edgecolor=color, linewidth=1.5, zorder=4))
    ax.set_xlim(low[0] - span[0] * 0.03, high[0] + span[0] * 0.03)
    ax.set_ylim(low[1] - span[1] * 0.03, high[1] + span[1] * 0.03)
    ax.set_aspect("auto")
    ax.set_title(f"{method.upper()} of {len(coords)} samples, {len(picked)} shown as images "
                 f"(frame: {source} cluster colour)")
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    _save(fig, path)


# --- label distribution per cluster ----------------------------------------------------------------


def write_cluster_labels_csv(labels: np.ndarray, clusters: np.ndarray, class_names: list[str],
                             path: str | Path) -> None:
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
                counts = np.bincount(known, minlength=len(class_names)) if len(known) else np.zeros(len(class_names),
                                                                                                   dtype=np.int64)
                matched = mapping.get(cluster)
                share = f"{counts[matched] / len(known):.4f}" if matched is not None and len(known) else ""
                writer.writerow(["noise" if cluster == NOISE else cluster, int(members.sum()), len(known),
                                 class_names[matched] if matched is not None else "", share, *counts.tolist()])


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


def plot_note(text: str, path: str | Path) -> None:
    """A small picture that only says ``text``: for a declared plot that has nothing to draw."""
    fig = Figure(figsize=(6.0, 1.6), layout="constrained")
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10)
    ax.set_axis_off()
    _save(fig, path)


def plot_training_curves(curves: dict[str, Path], path: str | Path) -> None:
    present = {}
    for name, curve_path in curves.items():
        if Path(curve_path).is_file():
            present[name] = read_curve(curve_path)
        else:
            log.warning("training curve %s: %s not found, skipped", name, curve_path)
    if not present:
        plot_note("no training curves", path)
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

FIGURES = (  # (file, heading, caption) of the report, in its order; absent files are left out
    ("overview.png", "Clusters at a glance", "each cluster's most confident images (red frame: not its matched class)"),
    ("embedding.png", "Map of the features", "coloured by cluster and by true class"),
    ("embedding_thumbnails.png", "Map with images", "images at their points, spread so that none covers another"),
    ("confusion_finetune.png", "Confusion: fine-tuned clusters", "rows: true classes; columns: matched clusters"),
    ("confusion_cluster.png", "Confusion: cluster stage", "rows: true classes; columns: matched clusters"),
    ("cluster_sizes.png", "Cluster sizes", "largest first"),
    ("k_curve.png", "Choice of K", "the label-free score of every candidate K"),
    ("training_curves.png", "Training curves", "pretraining and fine-tuning losses (DVCLive)"),
)


def _image_rows(prepared, ids: np.ndarray, where: str) -> np.ndarray:
    index = {sample_id: i for i, sample_id in enumerate(prepared.ids.tolist())}
    rows = np.array([index.get(i, -1) for i in ids.tolist()], dtype=np.int64)
    if (rows < 0).any():
        raise DataError(f"{where}: id {ids[rows < 0][0]!r} is not in the prepared data; is it stale?")
    return rows


def make_all_plots(features_dir: str | Path, sources: dict[str, Path], prepared_dir: str | Path,
                   curves: dict[str, Path], out_dir: str | Path, params, seed: int,
                   k_curve: str | Path | None = None, metrics: dict[str, Path] | None = None) -> None:
    """Write every figure, the contact sheets and ``report.html`` into a fresh ``out_dir``, swapped
    into place only when all succeed.

    ``sources`` maps a name to an assignments parquet; the maps and sheets show the last one.
    ``metrics`` maps a stage name to its metrics JSON, for the report.
    """
    from .data.prepared import load_prepared
    from .report import write_report
    from .sheets import cluster_sheet, cluster_views, overview_sheet, save_png, tile_side, tiles

    if not sources:
        raise ValueError("make_all_plots needs at least one source of assignments")
    prepared = load_prepared(prepared_dir)
    class_names = list(prepared.classes)
    assignments = {name: read_assignments(p) for name, p in sources.items()}
    features = read_features(features_dir)
    stage_metrics = {name: read_json(p) for name, p in (metrics or {}).items()}

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
    image_rows = _image_rows(prepared, last.ids, str(sources[last_name]))
    side = tile_side(max(prepared.images.shape[1:3]))

    def images(rows: np.ndarray) -> np.ndarray:  # assignment rows -> their prepared images
        return np.stack([prepared.images[i] for i in image_rows[rows]]) if len(rows) else \
            np.zeros((0, *prepared.images.shape[1:]), dtype=np.uint8)

    k = max(1, *((a.num_clusters or int(a.clusters.max()) + 1) if len(a) else 0 for a in assignments.values()))
    with atomic_dir(out_dir) as tmp:
        for name, a in assignments.items():
            if not (a.labels != UNLABELED).any():
                log.info("%s: no labelled samples, confusion skipped", name)
                continue
            plot_confusion(a.labels, a.clusters, class_names, tmp / f"confusion_{name}.png",
                           title=f"{name}: true class vs cluster")
            write_confusion_csv(confusion_records(a.labels, a.clusters, class_names), tmp / f"confusion_{name}.csv")
            write_cluster_labels_csv(a.labels, a.clusters, class_names, tmp / f"cluster_labels_{name}.csv")
        plot_cluster_sizes({name: a.clusters for name, a in assignments.items()}, tmp / "cluster_sizes.png", k)

        shown = np.flatnonzero(found)
        picked, coords = embed_2d(features.vectors[feature_rows[shown]], params.embedding, params.max_points, seed)
        points = shown[picked]  # assignment rows of the mapped points
        plot_embedding(coords, last.clusters[points], last.labels[points], class_names, tmp / "embedding.png",
                       params.embedding, source=last_name)
        if params.thumbnail_grid:
            on_map = thumbnail_points(coords, params.thumbnail_grid, seed)
            plot_thumbnail_map(coords, last.clusters[points], on_map, tiles(images(points[on_map]), min(side, 64)),
                               tmp / "embedding_thumbnails.png", params.embedding, params.thumbnail_grid, last_name)
        plot_training_curves(curves, tmp / "training_curves.png")
        chose_k = k_curve is not None and Path(k_curve).is_file()  # only when the cluster stage chose K
        if chose_k:
            plot_k_curve(k_curve, tmp / "k_curve.png")
        else:  # dvc.yaml declares the picture: a note keeps `dvc plots show` from failing on it
            plot_note(f"K was given (cluster.k: {k}); cluster.k: auto chooses it without labels and draws\n"
                      "the score of every candidate here", tmp / "k_curve.png")

        views = cluster_views(last.clusters, last.confidence, last.labels, class_names)
        if len(views) > params.max_sheets:
            log.info("%d clusters: contact sheets of the %d largest", len(views), params.max_sheets)
            views = sorted(views, key=lambda v: -len(v.rows))[: params.max_sheets]
        save_png(overview_sheet(views, images, params.overview_images, side), tmp / "overview.png")
        sheets = []
        (tmp / "sheets").mkdir()
        for view in views:
            png = tmp / "sheets" / f"{'noise' if view.cluster == NOISE else f'cluster_{view.cluster:03d}'}.png"
            save_png(cluster_sheet(view, images, params.sheet_confident, params.sheet_uncertain, 10, side), png)
            sheets.append((f"{view.name}: {len(view.rows)} images", png))

        figures = [(heading, tmp / file, caption) for file, heading, caption in FIGURES
                   if (tmp / file).is_file() and (file != "k_curve.png" or chose_k)]
        title = f"{prepared.meta.get('name', 'data')}: {len(last)} images, {last_name} clusters"
        write_report(tmp / "report.html", title, stage_metrics, figures, sheets)
