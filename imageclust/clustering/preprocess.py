"""Feature preprocessing before clustering, in this order: L2 normalisation, standardisation,
PCA with optional whitening (DeepCluster's recipe is PCA-256, whitening, then L2), and UMAP
(McInnes et al. 2018; the recipe of N2D, McConville et al. 2021, for clustering).

The fitted transform is kept as plain arrays so that new images can be mapped into the same
space at inference time without pickles. UMAP has no closed form for new points: a new point is
placed as umap-learn starts its own ``transform``, at the mean of the embeddings of its nearest
training points weighted by UMAP's fuzzy membership strengths, without the refinement epochs.
The training points keep the embedding UMAP fitted for them.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from ..config import Int, Section


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@contextmanager
def torch_threads_kept():
    """umap-learn's numba kernels reset the OpenMP thread count, which PyTorch shares, to every core
    whatever ``OMP_NUM_THREADS`` says; this puts PyTorch's back (when it is loaded)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        if before is not None:
            torch.set_num_threads(before)


class UmapParams(Section):
    num_neighbors: Int = Field(15, ge=2, description="UMAP's neighbourhood, also the one that places new points")
    min_dist: float = Field(0.0, ge=0, description="0 packs each cluster tightly: what clustering wants")
    epochs: Int | None = Field(None, ge=1, description="null: umap-learn's choice (500 below 10,000 points, else 200)")


@dataclass
class UmapPlacement:
    """Where UMAP puts new points: the fitted inputs, their embedding and the neighbourhood size."""

    reference: np.ndarray  # (n, d) the training points as UMAP saw them
    embedding: np.ndarray  # (n, umap_dim)
    num_neighbors: int

    @classmethod
    def fit(cls, x: np.ndarray, dim: int, p, seed: int) -> UmapPlacement:
        import umap

        neighbors = min(p.num_neighbors, len(x) - 1)
        model = umap.UMAP(
            n_components=dim,
            n_neighbors=neighbors,
            min_dist=p.min_dist,
            metric="euclidean",
            random_state=seed,
            n_jobs=1,
            n_epochs=p.epochs,
            low_memory=True,
        )
        with torch_threads_kept():
            embedding = model.fit_transform(x).astype(np.float32)
        return cls(reference=np.ascontiguousarray(x, dtype=np.float32), embedding=embedding, num_neighbors=neighbors)

    def place(self, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
        import faiss
        from umap.umap_ import smooth_knn_dist

        index = faiss.IndexFlatL2(self.reference.shape[1])
        index.add(self.reference)
        out = np.empty((len(x), self.embedding.shape[1]), dtype=np.float32)
        for start in range(0, len(x), chunk):
            sq, neighbors = index.search(
                np.ascontiguousarray(x[start : start + chunk], dtype=np.float32), self.num_neighbors
            )
            distances = np.sqrt(np.maximum(sq, 0.0))
            sigmas, rhos = smooth_knn_dist(distances, float(self.num_neighbors))
            weights = np.exp(-np.maximum(distances - rhos[:, None], 0.0) / sigmas[:, None])
            weights /= weights.sum(1, keepdims=True)
            out[start : start + chunk] = np.einsum("nk,nkd->nd", weights, self.embedding[neighbors])
        return out


@dataclass
class FeatureTransform:
    l2_normalize: bool
    shift: np.ndarray | None = None  # standardisation: per-feature mean and std, (d,)
    spread: np.ndarray | None = None
    mean: np.ndarray | None = None  # PCA centre, (d,)
    components: np.ndarray | None = None  # (pca_dim, d)
    scale: np.ndarray | None = None  # per-component divisor: sqrt(variance) when whitening, else 1
    umap: UmapPlacement | None = None

    @classmethod
    def fit(cls, x: np.ndarray, params, seed: int) -> tuple[FeatureTransform, np.ndarray]:
        """The transform fitted on the training features ``x`` by ``cluster`` params, and ``x`` transformed."""
        t = cls(l2_normalize=params.l2_normalize)
        x = t._linear(x)
        if params.standardize:
            spread = x.std(0)
            t.shift, t.spread = x.mean(0).astype(np.float32), np.where(spread > 1e-8, spread, 1.0).astype(np.float32)
            x = (x - t.shift) / t.spread
        if params.pca_dim is not None or params.whiten:
            from sklearn.decomposition import PCA

            dim = min(params.pca_dim or x.shape[1], x.shape[0], x.shape[1])
            pca = PCA(n_components=dim, random_state=seed).fit(x)
            t.mean, t.components = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
            whiten = np.sqrt(pca.explained_variance_) + 1e-8
            t.scale = (whiten if params.whiten else np.ones(dim)).astype(np.float32)
            x = (x - t.mean) @ t.components.T / t.scale
        x = x.astype(np.float32)
        if params.umap_dim is not None:
            t.umap = UmapPlacement.fit(x, params.umap_dim, params.umap, seed)
            x = t.umap.embedding
        return t, x

    def _linear(self, x: np.ndarray) -> np.ndarray:
        x = l2_normalize(x) if self.l2_normalize else x
        if self.shift is not None:
            x = (x - self.shift) / self.spread
        if self.components is not None:
            x = (x - self.mean) @ self.components.T / self.scale
        return x.astype(np.float32)

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = self._linear(x)
        return self.umap.place(x) if self.umap is not None else x

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"l2_normalize": np.array(self.l2_normalize)}
        if self.shift is not None:
            arrays.update(standardize_shift=self.shift, standardize_spread=self.spread)
        if self.components is not None:
            arrays.update(pca_mean=self.mean, pca_components=self.components, pca_scale=self.scale)
        if self.umap is not None:
            arrays.update(
                umap_reference=self.umap.reference,
                umap_embedding=self.umap.embedding,
                umap_num_neighbors=np.array(self.umap.num_neighbors),
            )
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> FeatureTransform:
        get = dict(arrays).get
        umap = None
        if get("umap_reference") is not None:
            umap = UmapPlacement(
                reference=get("umap_reference"),
                embedding=get("umap_embedding"),
                num_neighbors=int(get("umap_num_neighbors")),
            )
        return cls(
            l2_normalize=bool(arrays["l2_normalize"]),
            shift=get("standardize_shift"),
            spread=get("standardize_spread"),
            mean=get("pca_mean"),
            components=get("pca_components"),
            scale=get("pca_scale"),
            umap=umap,
        )
