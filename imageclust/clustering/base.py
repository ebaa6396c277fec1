"""What every clustering method is and returns, and how it assigns points it was not fitted on.

A method is a ``ClusterMethod`` record in ``registry.py``: ``fit(x, k, params, seed)`` sees the
transformed features of the training splits and its own params block (``cluster.<name>``), and
returns a ``Clustering`` whose documented rule assigns every sample, seen or new:
- ``centroid``: the nearest centre, with DEC's Student-t soft assignment as confidence (k-means);
- ``gmm``: the mixture's posterior (Gaussian mixture);
- ``knn``: a vote of the nearest fitted points, the share of the winning cluster as confidence
  (methods without centres: spectral, agglomerative, HDBSCAN, whose noise (-1) can win the vote).
Everything a rule needs is kept as plain arrays, saved in ``model.npz`` without pickles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import NoParams, Section


@dataclass(frozen=True)
class ClusterMethod:
    """One clustering method, as the registry lists it."""

    name: str
    fit: Callable[[np.ndarray, int, Any, int], Clustering]  # (x, k, its params block, seed)
    params: type[Section] = NoParams
    finds_k: bool = False  # it finds the number of clusters itself: cluster.k is not used
    k_criterion: str = "stability"  # how cluster.k: auto scores a K, unless cluster.auto_k.criterion says


def student_t_assignment(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Soft assignment q_ij ∝ (1 + ||x_i - mu_j||^2)^-1 (Xie et al. 2016, DEC, eq. 1 with alpha=1)."""
    d2 = (x**2).sum(1)[:, None] + (centroids**2).sum(1)[None, :] - 2.0 * x @ centroids.T
    d2 = np.maximum(d2, 0.0)  # rounding can push tiny distances below zero
    q = 1.0 / (1.0 + d2)
    return q / q.sum(1, keepdims=True)


@dataclass
class Clustering:
    centroids: np.ndarray  # (k, d) in the transformed space: the method's centres, else each cluster's mean
    stats: dict = field(default_factory=dict)
    rule: str = "centroid"
    arrays: dict = field(default_factory=dict)  # what the rule needs beyond the centroids
    fit_labels: np.ndarray | None = None  # the method's own assignment of the points it was fitted on

    def predict(self, x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Cluster and confidence in [0, 1] for each row of ``x``, by the method's rule."""
        if self.rule == "gmm":
            q = _gaussian_mixture(self.arrays).predict_proba(x)
            return q.argmax(1), q.max(1).astype(np.float32)
        if self.rule == "knn":
            return _knn_vote(
                self.arrays["reference"],
                self.arrays["reference_labels"],
                x,
                int(self.arrays["num_neighbors"]),
                len(self.centroids),
            )
        clusters, confidence = [], []
        for start in range(0, len(x), chunk):
            q = student_t_assignment(x[start : start + chunk], self.centroids)
            clusters.append(q.argmax(1))
            confidence.append(q.max(1))
        return np.concatenate(clusters), np.concatenate(confidence).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "centroids": self.centroids,
            "rule": np.array(self.rule),
            **{f"rule_{k}": np.asarray(v) for k, v in self.arrays.items()},
        }

    def to_tensors(self) -> dict:
        """As ``to_arrays``, in what ``torch.load(weights_only=True)`` reads back (tensors, str, int)."""
        import torch

        return {
            "rule": self.rule,
            "centroids": torch.from_numpy(np.asarray(self.centroids)),
            "arrays": {k: torch.from_numpy(np.asarray(v)) for k, v in self.arrays.items()},
        }

    @classmethod
    def from_tensors(cls, saved: dict) -> Clustering:
        return cls(
            centroids=saved["centroids"].numpy(),
            rule=saved["rule"],
            arrays={k: v.numpy() for k, v in saved["arrays"].items()},
        )

    @classmethod
    def from_arrays(cls, arrays) -> Clustering:
        rule = str(arrays["rule"]) if "rule" in arrays else "centroid"
        extra = {k.removeprefix("rule_"): v for k, v in arrays.items() if k.startswith("rule_")}
        return cls(centroids=arrays["centroids"], rule=rule, arrays=extra)


def distances_to_centres(x: np.ndarray, centres: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row of ``x`` to its cluster's centre (NaN for noise, -1)."""
    clusters = np.asarray(clusters)
    out = np.full(len(x), np.nan, dtype=np.float32)
    at = clusters >= 0
    out[at] = np.linalg.norm(np.asarray(x)[at] - np.asarray(centres)[clusters[at]], axis=1)
    return out


def cluster_means(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The mean of each cluster's points (noise, -1, left out); an empty cluster's centre is the overall mean."""
    clustered = labels >= 0
    x, labels = x[clustered], labels[clustered]
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x)
    counts = np.bincount(labels, minlength=k)[:, None]
    return np.where(counts > 0, sums / np.maximum(counts, 1), x.mean(0)).astype(np.float32)


def _knn_vote(reference, reference_labels, x, num_neighbors: int, k: int):
    """Majority of the nearest fitted points; noise (-1) is a candidate like any cluster."""
    from sklearn.neighbors import KNeighborsClassifier

    n = min(num_neighbors, len(reference))
    vote = KNeighborsClassifier(n_neighbors=n).fit(reference, np.asarray(reference_labels) + 1)  # noise: column 0
    share = np.zeros((len(x), k + 1), dtype=np.float32)
    share[:, vote.classes_] = vote.predict_proba(x)
    return share.argmax(1) - 1, share.max(1)


def _gaussian_mixture(arrays):
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(n_components=len(arrays["weights"]), covariance_type=str(arrays["covariance_type"]))
    gmm.weights_, gmm.means_ = arrays["weights"], arrays["means"]
    gmm.covariances_, gmm.precisions_cholesky_ = arrays["covariances"], arrays["precisions_cholesky"]
    return gmm
