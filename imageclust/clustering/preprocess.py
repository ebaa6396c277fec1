"""Feature preprocessing before clustering: L2 normalisation, PCA and whitening.

The fitted transform is kept as plain arrays so that new images can be mapped into the same
space at inference time without pickles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class FeatureTransform:
    l2_normalize: bool
    mean: np.ndarray | None = None  # PCA centre, (d,)
    components: np.ndarray | None = None  # (pca_dim, d)
    scale: np.ndarray | None = None  # per-component divisor: sqrt(variance) when whitening, else 1

    @classmethod
    def fit(cls, x: np.ndarray, l2: bool, pca_dim: int | None, whiten: bool, seed: int) -> "FeatureTransform":
        t = cls(l2_normalize=l2)
        x = l2_normalize(x) if l2 else x
        if pca_dim is not None or whiten:
            from sklearn.decomposition import PCA

            dim = min(pca_dim or x.shape[1], x.shape[0], x.shape[1])
            pca = PCA(n_components=dim, random_state=seed).fit(x)
            t.mean, t.components = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
            t.scale = (np.sqrt(pca.explained_variance_) + 1e-8 if whiten else np.ones(dim)).astype(np.float32)
        return t

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = l2_normalize(x) if self.l2_normalize else x
        if self.components is not None:
            x = (x - self.mean) @ self.components.T / self.scale
        return x.astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"l2_normalize": np.array(self.l2_normalize)}
        if self.components is not None:
            arrays.update(pca_mean=self.mean, pca_components=self.components, pca_scale=self.scale)
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "FeatureTransform":
        pca = "pca_components" in arrays
        return cls(
            l2_normalize=bool(arrays["l2_normalize"]),
            mean=arrays["pca_mean"] if pca else None,
            components=arrays["pca_components"] if pca else None,
            scale=arrays["pca_scale"] if pca else None,
        )
