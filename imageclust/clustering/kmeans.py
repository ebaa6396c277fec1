"""k-means (Lloyd, 1982) with k-means++ seeding (Arthur & Vassilvitskii, 2007) and restarts, through
scikit-learn or faiss; spherical k-means (cosine, centres renormalised each step) through faiss.
DEC's soft assignment gives the confidence (``base.student_t_assignment``)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ..config import Int, Section
from .base import Clustering, ClusterMethod


class Params(Section):
    backend: Literal["sklearn", "faiss"] = Field(
        "sklearn",
        description="faiss is several times faster on large sets (and uses every point: no subsampling); "
        "with `faiss-gpu` installed on a CUDA machine it runs on every GPU",
    )
    init: Literal["kmeans++", "random"] = Field(
        "kmeans++", description="seeding of each faiss restart (scikit-learn always uses k-means++)"
    )
    n_init: Int = Field(10, ge=1, description="restarts; the lowest objective is kept")
    max_iter: Int = Field(300, ge=1, description="Lloyd iterations per restart")
    spherical: bool = Field(
        False,
        description="cosine k-means, centres renormalised each step (needs `backend: "
        "faiss` and `cluster.l2_normalize: true`)",
    )

    @model_validator(mode="after")
    def _spherical_needs_faiss(self):
        if self.spherical and self.backend != "faiss":
            raise ValueError("spherical k-means needs backend faiss")
        return self


def _sklearn(x: np.ndarray, k: int, p: Params, seed: int) -> Clustering:
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=p.n_init, max_iter=p.max_iter, random_state=seed).fit(x)
    return Clustering(
        centroids=model.cluster_centers_.astype(np.float32),
        stats={"inertia": float(model.inertia_), "iterations": int(model.n_iter_)},
    )


def _faiss(x: np.ndarray, k: int, p: Params, seed: int) -> Clustering:
    """faiss's k-means on every point (no subsampling), each restart seeded by k-means++ unless
    ``init`` is random (faiss's own); the restart with the lowest objective is kept. With faiss-gpu
    and a GPU, faiss runs it on every GPU it sees."""
    import faiss
    from sklearn.cluster import kmeans_plusplus

    x = np.ascontiguousarray(x, dtype=np.float32)
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0  # faiss-gpu on a CUDA machine: all of them
    best = None
    for restart in range(p.n_init):
        model = faiss.Kmeans(
            x.shape[1],
            k,
            niter=p.max_iter,
            nredo=1,
            seed=seed + restart,
            spherical=p.spherical,
            max_points_per_centroid=max(256, -(-len(x) // k)),
            verbose=False,
            gpu=gpus > 0,
        )
        init = None
        if p.init == "kmeans++":
            init = kmeans_plusplus(x, k, random_state=seed + restart)[0].astype(np.float32)
            if p.spherical:
                init /= np.maximum(np.linalg.norm(init, axis=1, keepdims=True), 1e-12)
        model.train(x, init_centroids=init)
        objective = float(model.obj[-1]) if len(model.obj) else float("inf")
        better = best is None or (objective > best[1] if p.spherical else objective < best[1])  # cosine: larger
        if better:
            best = (model.centroids.copy(), objective)
    return Clustering(centroids=best[0], stats={"objective": best[1], "iterations": p.max_iter})


def fit_kmeans(x: np.ndarray, k: int, params: Params, seed: int) -> Clustering:
    return (_faiss if params.backend == "faiss" else _sklearn)(x, k, params, seed)


METHOD = ClusterMethod("kmeans", fit_kmeans, Params)
