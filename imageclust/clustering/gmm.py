"""Gaussian mixture (EM, Dempster et al. 1977) with diagonal, full, tied or spherical covariances,
k-means initialisation; new points go to the component of highest posterior. Its BIC chooses K."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..config import Int, Section
from .base import Clustering, ClusterMethod


class Params(Section):
    covariance: Literal["diag", "full", "tied", "spherical"] = Field("diag", description="covariance of each component")
    n_init: Int = Field(1, ge=1, description="EM restarts")
    max_iter: Int = Field(200, ge=1, description="EM iterations")
    reg_covar: float = Field(1e-6, gt=0, description="added to the covariances' diagonal (a floor)")


def fit_gmm(x: np.ndarray, k: int, params: Params, seed: int) -> Clustering:
    from sklearn.mixture import GaussianMixture

    p = params
    model = GaussianMixture(
        n_components=k,
        covariance_type=p.covariance,
        n_init=p.n_init,
        max_iter=p.max_iter,
        reg_covar=p.reg_covar,
        random_state=seed,
    ).fit(x)
    arrays = {
        "weights": model.weights_,
        "means": model.means_,
        "covariances": model.covariances_,
        "precisions_cholesky": model.precisions_cholesky_,
        "covariance_type": np.array(p.covariance),
    }
    return Clustering(
        centroids=model.means_.astype(np.float32),
        rule="gmm",
        arrays=arrays,
        stats={
            "bic": float(model.bic(x)),
            "converged": bool(model.converged_),
            "iterations": int(model.n_iter_),
            "mean_log_likelihood": float(model.score(x)),
        },
    )


METHOD = ClusterMethod("gmm", fit_gmm, Params, k_criterion="bic")
