"""Label-free scores of one candidate K, for ``cluster.k: auto`` (``choose_k.py`` scans them).

Each takes the sample being clustered and K; the resampling ones also take ``fit(x, k, seed)``
(the clustering method's labels of ``x``, fitted on ``x``) and ``transfer(fitted, new, k, seed)``
(its labels of ``new``, fitted on ``fitted``).
The resampling criteria compare clusterings of disjoint halves of the sample, transferred from one
half to the other by the method's own rule for new points, as the papers do with a classifier.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Fit = Callable[[np.ndarray, int, int], np.ndarray]  # (x, k, seed) -> labels of x
Transfer = Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]  # (fit on, assign, k, seed) -> labels


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (Rousseeuw 1987) of ``labels`` in ``x``'s space; -1 for a single cluster."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(x, labels)) if len(np.unique(labels)) > 1 else -1.0


def _halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def prediction_strength(x: np.ndarray, k: int, fit: Fit, transfer: Transfer, seed: int, repeats: int = 2) -> float:
    """Prediction strength (Tibshirani & Walther 2005, eq. 2.1): cluster a test half, and ask how
    often the clustering fitted on the training half puts two points of the same test cluster
    together; the worst test cluster counts. Mean over ``repeats`` random halvings."""
    rng = np.random.default_rng(seed)
    strengths = []
    for repeat in range(repeats):
        train, test = _halves(len(x), rng)
        own = fit(x[test], k, seed + repeat)
        transferred = transfer(x[train], x[test], k, seed + repeat)
        worst = 1.0
        for cluster in np.unique(own):
            members = transferred[own == cluster]
            n = len(members)
            if n < 2:
                continue
            counts = np.bincount(members).astype(np.float64)
            worst = min(worst, float((counts * (counts - 1)).sum() / (n * (n - 1))))
        strengths.append(worst)
    return float(np.mean(strengths))


def _matched_disagreement(a: np.ndarray, b: np.ndarray) -> float:
    from ..metrics import clustering_accuracy

    return 1.0 - clustering_accuracy(a, b)


def instability(x: np.ndarray, k: int, fit: Fit, transfer: Transfer, seed: int, repeats: int = 2) -> float:
    """Resampling stability (Lange, Roth, Braun & Buhmann 2004, sections 3-4): the disagreement,
    after the best matching of cluster names, between a half's own clustering and the clustering
    transferred from the other half, divided by the same disagreement between random labellings
    with K labels, so that K's are comparable. Lower is better."""
    rng = np.random.default_rng(seed)
    observed, chance = [], []
    for repeat in range(repeats):
        train, test = _halves(len(x), rng)
        own = fit(x[test], k, seed + repeat)
        transferred = transfer(x[train], x[test], k, seed + repeat)
        observed.append(_matched_disagreement(own, transferred))
        for _ in range(3):
            chance.append(_matched_disagreement(rng.integers(k, size=len(test)), rng.integers(k, size=len(test))))
    return float(np.mean(observed) / max(np.mean(chance), 1e-12))


def principal_components(x: np.ndarray, seed: int, max_dim: int = 128) -> np.ndarray:
    """``x`` projected on its ``max_dim`` leading principal components (no more than it has rows) when
    it is wider, as ``generalisation_kappa`` scores it; unchanged otherwise. A caller that scores many
    labellings of the same rows projects once."""
    if x.shape[1] <= max_dim:
        return x
    from sklearn.decomposition import PCA

    return PCA(n_components=min(max_dim, len(x)), random_state=seed).fit_transform(x)


def generalisation_kappa(
    x: np.ndarray, labels: np.ndarray, seed: int, folds: int = 3, max_samples: int = 2000, max_dim: int = 128
) -> float:
    """TURTLE's generalisation score (Gadetsky et al. 2024, section 4.3: k-fold linear classifiers
    fitted on the clustering) corrected for chance as Cohen's kappa, so that fewer, larger clusters
    do not win merely by being easier to predict: (acc - p_e) / (1 - p_e), with p_e the sum of the
    squared cluster shares. Wider features are first projected on their ``max_dim`` principal
    components, which keeps a scan over K affordable on a CPU."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from ..labelfree import generalisation_score

    x = principal_components(x, seed, max_dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        accuracy = generalisation_score([x], labels, folds=folds, max_samples=max_samples, seed=seed)
    shares = np.bincount(labels) / len(labels)
    expected = float((shares**2).sum())
    return float((accuracy - expected) / max(1.0 - expected, 1e-12))


def umap_embedding(x: np.ndarray, seed: int, dim: int = 10) -> np.ndarray:
    """A 10-d UMAP of ``x`` (as N2D clusters on), on which ``silhouette_umap`` scores the clusters."""
    from .preprocess import UmapParams, UmapPlacement

    return UmapPlacement.fit(x, min(dim, max(2, len(x) - 2)), UmapParams(min_dist=0.0), seed).embedding
