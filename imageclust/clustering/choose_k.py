"""Choosing K without labels (``cluster.k: auto``), by a criterion suited to each method.

- ``gmm``: the Bayesian information criterion of the mixture fitted with each K (lowest wins);
- ``spectral``: the eigengap heuristic (von Luxburg 2007, section 8.1): K such that the first K
  eigenvalues of the normalised Laplacian of the kNN graph are small and the (K+1)-th is not;
- every other method: the silhouette of the method's own clustering with each K (highest wins),
  in the space it clusters in.

Each candidate is fitted on one seeded subsample of at most ``auto_k.max_samples`` training points,
so the scan costs a fixed amount whatever the size of the data; the chosen K is then fitted on all.
The whole curve is returned, to be recorded and drawn.
"""

from __future__ import annotations

import numpy as np

CRITERIA = {"gmm": ("bic", "min"), "spectral": ("eigengap", "max")}
DEFAULT_CRITERION = ("silhouette", "max")


def criterion_of(method: str) -> tuple[str, str]:
    return CRITERIA.get(method, DEFAULT_CRITERION)


def _eigengaps(x: np.ndarray, num_neighbors: int, ks: list[int], seed: int) -> dict[int, float]:
    import scipy.sparse as sp
    from scipy.sparse.csgraph import laplacian
    from scipy.sparse.linalg import eigsh

    from .graph import knn_graph

    graph = knn_graph(x, num_neighbors)
    lap = laplacian(graph.astype(np.float64), normed=True)
    count = min(max(ks) + 1, len(x) - 1)
    # the smallest eigenvalues of L are the largest of 2I - L (which is positive semi-definite)
    shifted = 2.0 * sp.identity(len(x), format="csr") - lap
    v0 = np.random.default_rng(seed).random(len(x))
    values = np.sort(2.0 - eigsh(shifted, k=count, which="LA", v0=v0, return_eigenvectors=False))
    return {k: float(values[k] - values[k - 1]) for k in ks if k < len(values)}


def choose_k(x: np.ndarray, params, fit, seed: int) -> tuple[int, dict[int, float], str]:
    """(chosen K, {K: score}, criterion name) for ``params.method`` on the training features ``x``."""
    from sklearn.metrics import silhouette_score

    auto = params.auto_k
    rng = np.random.default_rng(seed)
    sample = x if len(x) <= auto.max_samples else x[np.sort(rng.choice(len(x), auto.max_samples, replace=False))]
    ks = list(range(auto.min_k, min(auto.max_k, len(sample) - 1) + 1))
    if not ks:
        raise ValueError(f"cluster.k=auto: {len(sample)} training samples leave no K in "
                         f"[{auto.min_k}, {auto.max_k}] to choose from")
    name, best = criterion_of(params.method)
    if name == "eigengap":
        curve = _eigengaps(sample, params.spectral.num_neighbors, ks, seed)
    else:
        curve = {}
        for k in ks:
            model = fit(sample, params.model_copy(update={"k": k}), seed)
            if name == "bic":
                curve[k] = float(model.stats["bic"])
            else:
                labels = model.fit_labels if model.fit_labels is not None else model.predict(sample)[0]
                curve[k] = float(silhouette_score(sample, labels)) if len(np.unique(labels)) > 1 else -1.0
    chosen = min(curve, key=lambda k: (curve[k] if best == "min" else -curve[k], k))  # ties: the smaller K
    return int(chosen), curve, name
