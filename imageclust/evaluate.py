"""Score each source of cluster assignments (k-means, fine-tuning, ...) per split and over all samples.

Each source is joined to the feature table on sample ids and scored in the feature table's row
order, so the result does not depend on how a source ordered its rows, and every source of a run
is scored on the same silhouette subsample.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from .config import Int, Section
from .errors import DataError, ParamsError
from .metrics import NOISE, ari, cluster_statistics, clustering_accuracy, label_free_scores, nmi, purity
from .tables import UNLABELED, Assignments, FeatureTable

ALL_SPLITS = "all"


class EvaluateParams(Section):
    """``evaluate``: label-based and label-free scores of each source of assignments."""

    key = "evaluate"
    splits: list[str] | None = Field(
        None, min_length=1, description="splits to report on, and `all`; null: every prepared split and `all`"
    )
    max_silhouette_samples: Int = Field(5000, ge=10, description="subsample for the silhouette score")


def _first_duplicate(ids: np.ndarray):
    unique, counts = np.unique(ids, return_counts=True)
    return unique[counts > 1][0] if (counts > 1).any() else None


def source_rows(features: FeatureTable, source: Assignments, name: str) -> np.ndarray:
    """Row of ``source`` for each row of ``features``; both must hold exactly the same ids."""
    for what, ids in (("features", features.ids), (f"source {name}", source.ids)):
        duplicate = _first_duplicate(ids)
        if duplicate is not None:
            raise DataError(f"{what}: id {duplicate!r} occurs more than once")
    position = {sample_id: row for row, sample_id in enumerate(source.ids)}
    missing = next((i for i in features.ids if i not in position), None)
    if missing is not None:
        raise DataError(f"source {name}: feature id {missing!r} has no assignment; is the source stale?")
    if len(source) != len(features):
        known = set(features.ids)
        extra = next(i for i in source.ids if i not in known)
        raise DataError(f"source {name}: id {extra!r} is not in the features; is the source stale?")
    rows = np.fromiter((position[i] for i in features.ids), dtype=np.int64, count=len(features))
    # Same ids but other splits or labels means the source was made from another version of the data.
    differs = np.flatnonzero((source.splits[rows] != features.splits) | (source.labels[rows] != features.labels))
    if differs.size:
        raise DataError(
            f"source {name}: id {features.ids[differs[0]]!r} has another split or label than in the features"
        )
    return rows


def score_split(labels, clusters, vectors, confidence, k: int, max_silhouette_samples: int, seed: int) -> dict:
    """All metrics of one split; the label-based ones only on labelled rows, and absent if there are none."""
    labeled = labels != UNLABELED
    scores = {"n": int(len(clusters)), "n_labeled": int(labeled.sum()), "mean_confidence": float(np.mean(confidence))}
    if labeled.any():
        y, c = labels[labeled], clusters[labeled]
        scores.update(acc=clustering_accuracy(y, c), acc_many_to_one=purity(y, c), nmi=nmi(y, c), ari=ari(y, c))
    scores.update(label_free_scores(vectors, clusters, max_silhouette_samples, seed))
    scores.update(cluster_statistics(clusters, k))
    return scores


def check_report_splits(report_splits: list[str] | None, present: list[str]) -> None:
    """Every split asked for is one the data has, or ``all``."""
    unknown = sorted(set(report_splits or []) - set(present) - {ALL_SPLITS})
    if unknown:
        raise ParamsError(
            f"params: evaluate.splits={report_splits} is invalid: {unknown[0]!r} is not among "
            f"the splits {present + [ALL_SPLITS]}"
        )


def evaluate_sources(
    features: FeatureTable,
    sources: dict[str, Assignments],
    max_silhouette_samples: int,
    seed: int,
    report_splits: list[str] | None = None,
) -> dict:
    """``{source: {split: metrics}}`` for ``report_splits`` (default: every split plus ``all``)."""
    check_report_splits(report_splits, sorted(set(features.splits)))
    results = {}
    for name, source in sources.items():
        if len(source) == 0:
            raise DataError(f"source {name}: no assignments")
        rows = source_rows(features, source, name)
        clusters = source.clusters[rows]
        confidence = source.confidence[rows].astype(np.float64)
        if clusters.min() < NOISE:
            raise DataError(
                f"source {name}: cluster id {clusters.min()}; ids must lie in [0, k), or be {NOISE} for noise"
            )
        # K as the method set it, so clusters left empty are counted; older files: the largest id + 1
        k = source.num_clusters or int(clusters.max()) + 1
        if clusters.max() >= k:
            raise DataError(f"source {name}: cluster id {clusters.max()} is not below its k={k}")
        splits = sorted(set(features.splits))
        if ALL_SPLITS in splits:
            raise DataError(f"source {name}: a split is named {ALL_SPLITS!r}, which is reserved for all samples")
        masks = {split: features.splits == split for split in splits}
        masks[ALL_SPLITS] = np.ones(len(features), dtype=bool)
        if report_splits is not None:
            masks = {split: masks[split] for split in report_splits}
        results[name] = {
            split: score_split(
                features.labels[mask],
                clusters[mask],
                features.vectors[mask],
                confidence[mask],
                k,
                max_silhouette_samples,
                seed,
            )
            for split, mask in masks.items()
        }
    return results
