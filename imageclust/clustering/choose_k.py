"""Choosing K without labels (``cluster.k: auto``). ``auto_k.criterion: auto`` takes the one suited
to the method; any method can use another:

- ``bic`` (``gmm``'s): the Bayesian information criterion of the mixture fitted with each K (lowest wins);
- ``eigengap`` (``spectral``'s): the eigengap heuristic (von Luxburg 2007, section 8.1): K such that
  the first K eigenvalues of the normalised Laplacian of the kNN graph are small and the (K+1)-th is
  not. It looks at the kNN graph of the features (``auto_k.num_neighbors``), not at any clustering;
- ``silhouette``: the silhouette of the method's own clustering with each K (highest wins), in the
  space it clusters in. It favours a dominant coarse split (K=2) when the features have one;
- ``silhouette_umap``: the silhouette of the same clustering measured on a 10-d UMAP of the sample;
- ``prediction_strength`` (Tibshirani & Walther 2005): the largest K whose clusters a clustering of
  another half of the data reproduces at least ``auto_k.strength_threshold`` of the time;
- ``stability`` (every other method's; Lange et al. 2004): the K whose clusterings of two halves
  agree best, relative to random labellings (lowest wins). On the validation suite's 28 cases it
  loses the least ACC with TURTLE's score (0.053 against 0.103 for the silhouette);
- ``generalisation``: TURTLE's generalisation score corrected for chance (highest wins).

The formulas are in ``k_criteria.py``; ``benchmarks/choose_k.py`` measures them on cases with known
answers. Each candidate is fitted on one seeded subsample of at most ``auto_k.max_samples`` training
points, so the scan costs a fixed amount whatever the size of the data; the chosen K is then fitted
on all. The whole curve is returned, to be recorded and drawn.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ..config import Int, Section
from ..progress import progress
from . import k_criteria
from .base import ClusterMethod
from .graph import knn_graph, laplacian_eigenpairs

# how each criterion's curve picks K: the highest, the lowest, or the largest K over a threshold.
# Ties go to the smaller K, except for the resampling and generalisation scores: two well-separated
# blobs merged are as stable and as predictable as kept apart, so there the finest partition wins.
BEST = {
    "bic": "min",
    "eigengap": "max",
    "silhouette": "max",
    "silhouette_umap": "max",
    "prediction_strength": "threshold",
    "stability": "min",
    "generalisation": "max",
}
TIES_TO_LARGER = {"stability", "generalisation"}
Criterion = Literal[
    "auto", "silhouette", "silhouette_umap", "eigengap", "bic", "prediction_strength", "stability", "generalisation"
]


class AutoKParams(Section):
    min_k: Int = Field(2, ge=2, description="the smallest K scanned when `cluster.k` is `auto`")
    max_k: Int = Field(20, ge=2, description="the largest K scanned")
    max_samples: Int = Field(5000, ge=10, description="each candidate K is fitted on a seeded subsample this large")
    criterion: Criterion = Field(
        "auto",
        description="`auto`: the method's own (`bic` for `gmm`, `eigengap` for `spectral`, else "
        "`stability`); `bic` needs `gmm`; see docs/clustering.md",
    )
    num_neighbors: Int = Field(
        10, ge=1, description="neighbours per point of the kNN graph whose Laplacian gives the eigengap"
    )
    strength_threshold: float = Field(
        0.8, gt=0, le=1, description="`prediction_strength` takes the largest K scoring at least this"
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


def _labels(method: ClusterMethod, block, x: np.ndarray, k: int, seed: int) -> np.ndarray:
    model = method.fit(x, k, block, seed)
    return model.fit_labels if model.fit_labels is not None else model.predict(x)[0]


def _curve(name: str, x: np.ndarray, ks: list[int], method: ClusterMethod, block, seed: int) -> dict[int, float]:
    fit = lambda data, k, s: _labels(method, block, data, k, s)  # noqa: E731
    transfer = lambda fitted, new, k, s: method.fit(fitted, k, block, s).predict(new)[0]  # noqa: E731
    embedded = k_criteria.umap_embedding(x, seed) if name == "silhouette_umap" else None
    curve = {}
    for k in progress(ks, desc=f"cluster: K by {name}", unit="K"):
        if name == "bic":
            curve[k] = float(method.fit(x, k, block, seed).stats["bic"])
        elif name == "prediction_strength":
            curve[k] = k_criteria.prediction_strength(x, k, fit, transfer, seed)
        elif name == "stability":
            curve[k] = k_criteria.instability(x, k, fit, transfer, seed)
        else:
            labels = fit(x, k, seed)
            if name == "generalisation":
                curve[k] = k_criteria.generalisation_kappa(x, labels, seed)
            else:
                curve[k] = k_criteria.silhouette(x if embedded is None else embedded, labels)
    return curve


def pick(curve: dict[int, float], name: str, threshold: float) -> int:
    """The K a criterion's curve chooses."""
    best = BEST[name]
    if best == "threshold":
        passing = [k for k, v in curve.items() if v >= threshold]
        return max(passing) if passing else min(curve)
    tie = -1 if name in TIES_TO_LARGER else 1
    return min(curve, key=lambda k: (curve[k] if best == "min" else -curve[k], tie * k))


def runner_up(curve: dict[int, float], name: str, threshold: float) -> tuple[int | None, float | None]:
    """The K that came second and the chosen K's margin over it, relative to the curve's range (for
    ``prediction_strength``: the next larger K, and how far the two lie on either side of the
    threshold, relative to it). None when there was nothing to choose between."""
    chosen = pick(curve, name, threshold)
    others = {k: v for k, v in curve.items() if k != chosen}
    if not others:
        return None, None
    if BEST[name] == "threshold":
        second = chosen + 1 if chosen + 1 in curve else chosen - 1
        gap = (
            abs(curve[chosen] - threshold)
            if second < chosen
            else min(curve[chosen] - threshold, threshold - curve[second])
        )
        return second, round(float(max(gap, 0.0) / threshold), 4)
    second = pick(others, name, threshold)
    spread = max(curve.values()) - min(curve.values())
    return second, round(float(abs(curve[chosen] - curve[second]) / max(spread, 1e-12)), 4)


def choose_k(
    x: np.ndarray,
    auto: AutoKParams,
    method: ClusterMethod,
    block,
    seed: int,
    criterion: str | None = None,
) -> tuple[int, dict[int, float], str]:
    """(chosen K, {K: score}, criterion name) for ``method`` (with its params ``block``) on the
    training features ``x``; ``criterion`` overrides ``auto.criterion`` (the benchmark's use)."""
    rng = np.random.default_rng(seed)
    sample = x if len(x) <= auto.max_samples else x[np.sort(rng.choice(len(x), auto.max_samples, replace=False))]
    name = criterion or criterion_of(auto, method)
    # the resampling criteria cluster halves of the sample
    largest = len(sample) // 2 - 1 if name in ("prediction_strength", "stability") else len(sample) - 1
    ks = list(range(auto.min_k, min(auto.max_k, largest) + 1))
    if not ks:
        raise ValueError(
            f"cluster.k=auto: {len(sample)} training samples leave no K in [{auto.min_k}, {auto.max_k}] to choose from"
        )
    if name == "eigengap":
        curve = _eigengaps(sample, auto.num_neighbors, ks, seed)
    else:
        curve = _curve(name, sample, ks, method, block, seed)
    return pick(curve, name, auto.strength_threshold), curve, name
