"""The cluster stage: fit ``cluster.method`` on the training splits' features, assign every sample,
and write the assignments, the fitted model (transform and the method's rule) and the K curve."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..errors import ParamsError
from ..io import atomic_dir
from ..labelfree import k_warning
from ..tables import Assignments, read_features, write_assignments
from .base import Clustering
from .choose_k import choose_k, runner_up
from .preprocess import FeatureTransform
from .registry import METHODS

log = logging.getLogger(__name__)

MODEL_FILE = "model.npz"
K_CURVE_FILE = "k_curve.csv"
ASSIGNMENTS_FILE = "assignments.parquet"


def check_k_fits(params, train_samples: int) -> None:
    """A given K must not exceed the training samples (methods that find their own K ignore it)."""
    if params.k != "auto" and params.k > train_samples and not METHODS[params.method].finds_k:
        raise ParamsError(f"params: cluster.k={params.k} is invalid: larger than the {train_samples} training samples")


def run_clustering(features_dir, out_dir, seed: int, train_splits: list[str], params) -> dict:
    """Fit ``params.method`` on the ``train_splits`` rows, assign every sample, write the results."""
    features = read_features(features_dir)
    train = np.isin(features.splits, train_splits)
    if not train.any():
        raise ParamsError(
            f"params: data.train_splits={train_splits} is invalid: the features hold splits "
            f"{sorted(set(features.splits))}"
        )
    check_k_fits(params, int(train.sum()))
    method = METHODS[params.method]
    started = time.perf_counter()
    transform, fitted = FeatureTransform.fit(features.vectors[train], params, seed)
    x = np.empty((len(train), fitted.shape[1]), dtype=np.float32)
    x[train] = fitted  # the training rows as the transform fitted them (UMAP's own embedding)
    if not train.all():
        x[~train] = transform.apply(features.vectors[~train])
    chosen = {}
    k = params.k
    if k == "auto" and not method.finds_k:
        try:
            k, curve, criterion = choose_k(x[train], params.auto_k, method, params.block, seed)
        except ValueError as err:
            raise ParamsError(f"params: {err}") from None
        log.info("k=auto: %s chose K=%d from %s", criterion, k, {key: round(v, 4) for key, v in curve.items()})
        second, margin = runner_up(curve, criterion, params.auto_k.strength_threshold)
        chosen = {
            "k_auto": True,
            "k_criterion": criterion,
            "k_curve": {str(key): v for key, v in curve.items()},
            "k_runner_up": second,
            "k_margin": margin,
        }
        warning = k_warning(k, second, margin)
        if warning:
            log.warning("k=auto: %s", warning)
    clustering = method.fit(x[train], k if k != "auto" else 0, params.block, seed)
    clusters, confidence = clustering.predict(x)
    if clustering.fit_labels is not None:  # the fitted points keep the method's own assignment
        clusters[train] = clustering.fit_labels
    k = len(clustering.centroids)  # cluster.k, unless the method found its own
    seconds = time.perf_counter() - started

    with atomic_dir(out_dir) as tmp:
        write_assignments(tmp / ASSIGNMENTS_FILE, Assignments.of(features, clusters, confidence, k))
        np.savez(tmp / MODEL_FILE, **clustering.to_arrays(), **transform.to_arrays())
        if chosen:
            write_k_curve(tmp / K_CURVE_FILE, chosen["k_curve"], chosen["k_criterion"], k)
    fitted = clusters[train]
    sizes = np.bincount(fitted[fitted >= 0], minlength=k)
    log.info("%s k=%d on %d x %d features: %.1fs", params.method, k, train.sum(), x.shape[1], seconds)
    return {
        "method": params.method,
        "k": k,
        "fit_samples": int(train.sum()),
        "dim": int(x.shape[1]),
        "empty_clusters": int((sizes == 0).sum()),
        "assign_rule": clustering.rule,
        "seconds": round(seconds, 3),
        **chosen,
        **clustering.stats,
    }


def write_k_curve(path: Path, curve: dict[str, float], criterion: str, chosen: int) -> None:
    """The scores of every candidate K, as CSV for the plot stage and anyone reading the folder."""
    lines = ["k,score,criterion,chosen"] + [f"{k},{v},{criterion},{int(int(k) == chosen)}" for k, v in curve.items()]
    path.write_text("\n".join(lines) + "\n")


def load_cluster_model(out_dir) -> tuple[FeatureTransform, Clustering]:
    """The transform and centroids the cluster stage saved, to assign new features."""
    with np.load(Path(out_dir) / MODEL_FILE) as arrays:
        arrays = dict(arrays)
    return FeatureTransform.from_arrays(arrays), Clustering.from_arrays(arrays)
