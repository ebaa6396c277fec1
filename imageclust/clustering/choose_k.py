"""Choosing K without labels (``cluster.k: auto``). ``auto_k.criterion: auto`` takes the one suited
to the method; any method can use ``silhouette`` or ``eigengap`` instead:

- ``bic`` (``gmm``'s): the Bayesian information criterion of the mixture fitted with each K (lowest wins);
- ``eigengap`` (``spectral``'s): the eigengap heuristic (von Luxburg 2007, section 8.1): K such that
  the first K eigenvalues of the normalised Laplacian of the kNN graph are small and the (K+1)-th is
  not. It looks at the kNN graph of the features (``auto_k.num_neighbors``), not at any clustering;
- ``silhouette`` (every other method's): the silhouette of the method's own clustering with each K
  (highest wins), in the space it clusters in. It favours a dominant coarse split (K=2) when the
  features have one.

Each candidate is fitted on one seeded subsample of at most ``auto_k.max_samples`` training points,
so the scan costs a fixed amount whatever the size of the data; the chosen K is then fitted on all.
The whole curve is returned, to be recorded and drawn.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ..config import Int, Section
from .base import ClusterMethod
from .graph import knn_graph, laplacian_eigenpairs

BEST = {"bic": "min", "eigengap": "max", "silhouette": "max"}


class AutoKParams(Section):
    min_k: Int = Field(2, ge=2, description="the smallest K scanned when `cluster.k` is `auto`")
    max_k: Int = Field(20, ge=2, description="the largest K scanned")
    max_samples: Int = Field(5000, ge=10, description="each candidate K is fitted on a seeded subsample this large")
    criterion: Literal["auto", "silhouette", "eigengap", "bic"] = Field(
        "auto",
        description="`auto`: the method's own (`bic` for `gmm`, `eigengap` for `spectral`, else "
        "`silhouette`); `bic` needs `gmm`",
    )
    num_neighbors: Int = Field(
        10, ge=1, description="neighbours per point of the kNN graph whose Laplacian gives the eigengap"
    )

    @model_validator(mode="after")
    def _range(self):
        if self.max_k < self.min_k:
            raise ValueError(f"max_k={self.max_k} is below min_k={self.min_k}")
        return self


def criterion_of(auto: AutoKParams, method: ClusterMethod) -> str:
    return method.k_criterion if auto.criterion == "auto" else auto.criterion


def _eigengaps(x: np.ndarray, num_neighbors: int, ks: list[int], seed: int) -> dict[int, float]:
    values = laplacian_eigenpairs(knn_graph(x, num_neighbors), max(ks) + 1, seed)[0]
    return {k: float(values[k] - values[k - 1]) for k in ks if k < len(values)}


def choose_k(
    x: np.ndarray, auto: AutoKParams, method: ClusterMethod, block, seed: int
) -> tuple[int, dict[int, float], str]:
    """(chosen K, {K: score}, criterion name) for ``method`` (with its params ``block``) on the
    training features ``x``."""
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    sample = x if len(x) <= auto.max_samples else x[np.sort(rng.choice(len(x), auto.max_samples, replace=False))]
    ks = list(range(auto.min_k, min(auto.max_k, len(sample) - 1) + 1))
    if not ks:
        raise ValueError(
            f"cluster.k=auto: {len(sample)} training samples leave no K in [{auto.min_k}, {auto.max_k}] to choose from"
        )
    name = criterion_of(auto, method)
    best = BEST[name]
    if name == "eigengap":
        curve = _eigengaps(sample, auto.num_neighbors, ks, seed)
    else:
        curve = {}
        for k in ks:
            model = method.fit(sample, k, block, seed)
            if name == "bic":
                curve[k] = float(model.stats["bic"])
            else:
                labels = model.fit_labels if model.fit_labels is not None else model.predict(sample)[0]
                curve[k] = float(silhouette_score(sample, labels)) if len(np.unique(labels)) > 1 else -1.0
    chosen = min(curve, key=lambda k: (curve[k] if best == "min" else -curve[k], k))  # ties: the smaller K
    return int(chosen), curve, name
