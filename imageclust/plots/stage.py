"""The plot stage: every figure, the contact sheets and ``report.html``, from the features, the
assignments, the prepared images, the training curves and every stage's metrics.

Its outputs are sized for git: the pictures, the page and the per-sample CSVs go to a folder that
DVC caches; only per-cluster CSVs, a few rows each that diff well across experiments, go to a
folder committed with the metrics."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ..data.prepared import load_prepared
from ..errors import DataError
from ..io import atomic_dir, read_json
from ..metrics import NOISE
from ..progress import progress
from ..tables import UNLABELED, read_assignments, read_features
from .common import plot_note
from .confusion import confusion_records, plot_confusion, write_cluster_labels_csv, write_confusion_csv
from .curves import find_losses, plot_k_curve, plot_training_curves
from .embedding import embed_2d, plot_embedding, plot_thumbnail_map, thumbnail_points
from .report import write_report
from .sheets import cluster_sheet, cluster_views, overview_sheet, save_png, tile_side, tiles
from .sizes import plot_cluster_sizes, write_cluster_sizes_csv

log = logging.getLogger(__name__)

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


def make_all_plots(
    features_dir: str | Path,
    sources: dict[str, Path],
    prepared_dir: str | Path,
    live_dirs: dict[str, Path],
    out_dir: str | Path,
    params,
    seed: int,
    k_curve: str | Path | None = None,
    metrics: dict[str, Path] | None = None,
    data_dir: str | Path | None = None,
) -> None:
    """Write every figure, the contact sheets and ``report.html`` into a fresh ``out_dir``, and the
    per-cluster CSVs (``cluster_labels_<source>.csv``, ``cluster_sizes.csv``) into a fresh
    ``data_dir`` (``out_dir`` when not given); both are swapped into place only when all succeed.

    ``sources`` maps a name to an assignments parquet; the maps and sheets show the last one.
    ``live_dirs`` maps a stage name to its DVCLive folder, whose losses are drawn; ``metrics`` maps a
    stage name to its metrics JSON, for the report.
    """
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
        log.warning(
            "%s: %d of %d ids are not in %s; left out of the embedding",
            last_name,
            int((~found).sum()),
            len(found),
            features_dir,
        )
    image_rows = _image_rows(prepared, last.ids, str(sources[last_name]))
    side = tile_side(max(prepared.images.shape[1:3]))

    def images(rows: np.ndarray) -> np.ndarray:  # assignment rows -> their prepared images
        return (
            np.stack([prepared.images[i] for i in image_rows[rows]])
            if len(rows)
            else np.zeros((0, *prepared.images.shape[1:]), dtype=np.uint8)
        )

    k = max(1, *((a.num_clusters or int(a.clusters.max()) + 1) if len(a) else 0 for a in assignments.values()))
    with atomic_dir(out_dir) as tmp, nullcontext(tmp) if data_dir is None else atomic_dir(data_dir) as data:
        write_cluster_sizes_csv({name: a.clusters for name, a in assignments.items()}, data / "cluster_sizes.csv", k)
        notes = set()  # pictures that only say why there is nothing to draw: declared outputs, not in the report
        for name, a in assignments.items():
            # per cluster: its size, and its class counts where labels exist (the list a user names clusters in)
            write_cluster_labels_csv(a.labels, a.clusters, class_names, data / f"cluster_labels_{name}.csv")
            if not (a.labels != UNLABELED).any():
                log.info("%s: no labelled samples, confusion skipped", name)
                plot_note(f"{name}: no labelled samples, so no confusion matrix", tmp / f"confusion_{name}.png")
                write_confusion_csv([], tmp / f"confusion_{name}.csv")
                notes.add(f"confusion_{name}.png")
                continue
            plot_confusion(
                a.labels, a.clusters, class_names, tmp / f"confusion_{name}.png", title=f"{name}: true class vs cluster"
            )
            write_confusion_csv(confusion_records(a.labels, a.clusters, class_names), tmp / f"confusion_{name}.csv")
        plot_cluster_sizes({name: a.clusters for name, a in assignments.items()}, tmp / "cluster_sizes.png", k)

        shown = np.flatnonzero(found)
        picked, coords = embed_2d(features.vectors[feature_rows[shown]], params.embedding, params.max_points, seed)
        points = shown[picked]  # assignment rows of the mapped points
        plot_embedding(
            coords,
            last.clusters[points],
            last.labels[points],
            class_names,
            tmp / "embedding.png",
            params.embedding,
            source=last_name,
        )
        if not params.thumbnail_grid:
            plot_note("plot.thumbnail_grid: 0, so no map with images", tmp / "embedding_thumbnails.png")
            notes.add("embedding_thumbnails.png")
        else:
            on_map = thumbnail_points(coords, params.thumbnail_grid, seed)
            plot_thumbnail_map(
                coords,
                last.clusters[points],
                last.labels[points],
                len(class_names),
                on_map,
                tiles(images(points[on_map]), min(side, 64)),
                tmp / "embedding_thumbnails.png",
                params.embedding,
                params.thumbnail_grid,
                last_name,
            )
        plot_training_curves(find_losses(live_dirs), tmp / "training_curves.png")
        if k_curve is not None and Path(k_curve).is_file():  # only when the cluster stage chose K
            plot_k_curve(k_curve, tmp / "k_curve.png")
        else:  # dvc.yaml declares every picture: a note keeps the stage and `dvc plots show` from failing on it
            notes.add("k_curve.png")
            plot_note(
                f"K was given (cluster.k: {k}); cluster.k: auto chooses it without labels and draws\n"
                "the score of every candidate here",
                tmp / "k_curve.png",
            )

        views = cluster_views(last.clusters, last.confidence, last.labels, class_names)
        if len(views) > params.max_sheets:
            log.info("%d clusters: contact sheets of the %d largest", len(views), params.max_sheets)
            views = sorted(views, key=lambda v: -len(v.rows))[: params.max_sheets]
        save_png(overview_sheet(views, images, params.overview_images, side), tmp / "overview.png")
        sheets = []
        (tmp / "sheets").mkdir()
        for view in progress(views, desc="plot: contact sheets", unit="cluster"):
            png = tmp / "sheets" / f"{'noise' if view.cluster == NOISE else f'cluster_{view.cluster:03d}'}.png"
            save_png(cluster_sheet(view, images, params.sheet_confident, params.sheet_uncertain, 10, side), png)
            sheets.append((f"{view.name}: {len(view.rows)} images", png))

        figures = [
            (heading, tmp / file, caption)
            for file, heading, caption in FIGURES
            if (tmp / file).is_file() and file not in notes
        ]
        title = f"{prepared.meta.get('name', 'data')}: {len(last)} images, {last_name} clusters"
        write_report(tmp / "report.html", title, stage_metrics, figures, sheets)
