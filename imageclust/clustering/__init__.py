"""Clustering methods by name, and the cluster stage that runs one on extracted features.

A method is ``fit(x, params, seed) -> Clustering``: it sees the transformed features of the
training splits, reads its own block of params (``cluster.<method>``) and returns a ``Clustering``
whose documented rule assigns every sample, seen or new (``base.py``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..errors import ParamsError
from ..io import atomic_dir
from ..tables import Assignments, read_features, write_assignments
from .base import Clustering
from .choose_k import choose_k
from .gmm import fit_gmm
from .graph import fit_agglomerative, fit_hdbscan, fit_spectral
from .kmeans import fit_kmeans
from .pic import fit_pic
from .preprocess import FeatureTransform

log = logging.getLogger(__name__)

METHODS = {
    "kmeans": fit_kmeans,
    "gmm": fit_gmm,
    "spectral": fit_spectral,
    "agglomerative": fit_agglomerative,
    "hdbscan": fit_hdbscan,
    "pic": fit_pic,
}
FINDS_K = {"hdbscan", "pic"}  # methods that find the number of clusters themselves: cluster.k is not used

__all__ = ["METHODS", "Clustering", "FeatureTransform", "run_clustering", "load_cluster_model"]
MODEL_FILE = "model.npz"
K_CURVE_FILE = "k_curve.csv"
ASSIGNMENTS_FILE = "assignments.parquet"


def check_k_fits(params, train_samples: int) -> None:
    """A given K must not exceed the training samples (methods that find their own K ignore it)."""
    if params.k != "auto" and params.k > train_samples and params.method not in FINDS_K:
        raise ParamsError(f"params: cluster.k={params.k} is invalid: larger than the {train_samples} training samples")


def run_clustering(features_dir, out_dir, gparams, data_params, params) -> dict:
    """Fit ``params.method`` on the training splits, assign every sample, write the results."""
    features = read_features(features_dir)
    train = np.isin(features.splits, data_params.train_splits)
    if not train.any():
        raise ParamsError(
            f"params: data.train_splits={data_params.train_splits} is invalid: the features hold splits "
            f"{sorted(set(features.splits))}"
        )
    check_k_fits(params, int(train.sum()))
    started = time.perf_counter()
    transform, fitted = FeatureTransform.fit(features.vectors[train], params, gparams.seed)
    x = np.empty((len(train), fitted.shape[1]), dtype=np.float32)
    x[train] = fitted  # the training rows as the transform fitted them (UMAP's own embedding)
    if not train.all():
        x[~train] = transform.apply(features.vectors[~train])
    chosen = {}
    if params.k == "auto" and params.method not in FINDS_K:
        try:
            k, curve, criterion = choose_k(x[train], params, METHODS[params.method], gparams.seed)
        except ValueError as err:
            raise ParamsError(f"params: {err}") from None
        log.info("k=auto: %s chose K=%d from %s", criterion, k, {key: round(v, 4) for key, v in curve.items()})
        params = params.model_copy(update={"k": k})
        chosen = {"k_auto": True, "k_criterion": criterion, "k_curve": {str(key): v for key, v in curve.items()}}
    clustering = METHODS[params.method](x[train], params, gparams.seed)
    clusters, confidence = clustering.predict(x)
    if clustering.fit_labels is not None:  # the fitted points keep the method's own assignment
        clusters[train] = clustering.fit_labels
    k = len(clustering.centroids)  # cluster.k, unless the method found its own
    seconds = time.perf_counter() - started

    with atomic_dir(out_dir) as tmp:
        write_assignments(tmp / ASSIGNMENTS_FILE, Assignments(
            ids=features.ids, splits=features.splits, labels=features.labels, clusters=clusters,
            confidence=confidence, num_clusters=k))
        np.savez(tmp / MODEL_FILE, **clustering.to_arrays(), **transform.to_arrays())
        if chosen:
            write_k_curve(tmp / K_CURVE_FILE, chosen["k_curve"], chosen["k_criterion"], k)
    fitted = clusters[train]
    sizes = np.bincount(fitted[fitted >= 0], minlength=k)
    log.info("%s k=%d on %d x %d features: %.1fs", params.method, k, train.sum(), x.shape[1], seconds)
    return {"method": params.method, "k": k, "fit_samples": int(train.sum()), "dim": int(x.shape[1]),
            "empty_clusters": int((sizes == 0).sum()), "assign_rule": clustering.rule, "seconds": round(seconds, 3),
            **chosen, **clustering.stats}


def write_k_curve(path: Path, curve: dict[str, float], criterion: str, chosen: int) -> None:
    """The scores of every candidate K, as CSV for the plot stage and anyone reading the folder."""
    lines = ["k,score,criterion,chosen"] + [f"{k},{v},{criterion},{int(int(k) == chosen)}" for k, v in curve.items()]
    path.write_text("\n".join(lines) + "\n")


def load_cluster_model(out_dir) -> tuple[FeatureTransform, Clustering]:
    """The transform and centroids the cluster stage saved, to assign new features."""
    with np.load(Path(out_dir) / MODEL_FILE) as arrays:
        arrays = dict(arrays)
    return FeatureTransform.from_arrays(arrays), Clustering.from_arrays(arrays)
