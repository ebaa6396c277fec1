"""Gaussian mixture (EM, Dempster et al. 1977) with diagonal, full, tied or spherical covariances,
k-means initialisation; new points go to the component of highest posterior."""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture

from .base import Clustering


def fit_gmm(x: np.ndarray, params, seed: int) -> Clustering:
    p = params.gmm
    model = GaussianMixture(n_components=params.k, covariance_type=p.covariance, n_init=p.n_init,
                            max_iter=p.max_iter, reg_covar=p.reg_covar, random_state=seed).fit(x)
    arrays = {"weights": model.weights_, "means": model.means_, "covariances": model.covariances_,
              "precisions_cholesky": model.precisions_cholesky_, "covariance_type": np.array(p.covariance)}
    return Clustering(centroids=model.means_.astype(np.float32), rule="gmm", arrays=arrays,
                      stats={"bic": float(model.bic(x)), "converged": bool(model.converged_),
                             "iterations": int(model.n_iter_), "mean_log_likelihood": float(model.score(x))})
