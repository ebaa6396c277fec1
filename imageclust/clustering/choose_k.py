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

import numpy as np

BEST = {"bic": "min", "eigengap": "max", "silhouette": "max"}
METHOD_CRITERION = {"gmm": "bic", "spectral": "eigengap"}  # the rest: silhouette


def criterion_of(params) -> str:
    if params.auto_k.criterion != "auto":
        return params.auto_k.criterion
    return METHOD_CRITERION.get(params.method, "silhouette")


def _eigengaps(x: np.ndarray, num_neighbors: int, ks: list[int], seed: int) -> dict[int, float]:
    from .graph import knn_graph, laplacian_eigenpairs

    values = laplacian_eigenpairs(knn_graph(x, num_neighbors), max(ks) + 1, seed)[0]
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
    name = criterion_of(params)
    best = BEST[name]
    if name == "eigengap":
        curve = _eigengaps(sample, auto.num_neighbors, ks, seed)
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
