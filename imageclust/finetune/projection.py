"""TURTLE's view of a representation space (``finetune.turtle``): L2-normalised, centred and projected on its
leading principal components, fitted on the training rows, so that the linear layers are small and one learning
rate suits every backbone; kept in the model for ``predict``."""

from __future__ import annotations

import numpy as np
import torch

from ..clustering.preprocess import l2_normalize


class SpaceProjection:
    """L2-normalise, centre, project on the leading principal components, scale each to unit variance:
    fitted on the training rows of one space, applied to every row and to new samples."""

    def __init__(self, mean: np.ndarray, components: np.ndarray, scale: np.ndarray):
        self.mean, self.components, self.scale = mean, components, scale

    @classmethod
    def fit(cls, x: np.ndarray, pca_dim: int | None, whiten: bool, seed: int) -> SpaceProjection:
        from sklearn.decomposition import PCA

        x = l2_normalize(np.asarray(x, dtype=np.float32))
        keep = min(pca_dim or x.shape[1], x.shape[1], len(x))
        pca = PCA(keep, svd_solver="auto", random_state=seed).fit(x)
        scale = np.sqrt(pca.explained_variance_).astype(np.float32)
        if not whiten:  # one scale for all components: the mean component variance becomes 1
            scale = np.full_like(scale, np.sqrt(pca.explained_variance_.mean()))
        return cls(pca.mean_.astype(np.float32), pca.components_.T.astype(np.float32), np.maximum(scale, 1e-6))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((l2_normalize(np.asarray(x, np.float32)) - self.mean) @ self.components / self.scale).astype(np.float32)

    def to_tensors(self) -> dict:
        return {name: torch.from_numpy(getattr(self, name)) for name in ("mean", "components", "scale")}

    @classmethod
    def from_tensors(cls, saved: dict) -> SpaceProjection:
        return cls(*(saved[name].numpy() for name in ("mean", "components", "scale")))


def components_kept(p, rows: int, num_clusters: int) -> int | None:
    """How many principal components each space keeps: ``p.pca_dim``, and with ``p.rows_per_component`` at
    most one per that many training rows (never fewer than ``num_clusters``); None: every dimension. With
    few rows in many dimensions a linear classifier generalises almost any labelling, and TURTLE then finds
    one that does not follow the classes (docs/results.md, "TURTLE on few images")."""
    if p.rows_per_component is None:
        return p.pca_dim
    cap = max(rows // p.rows_per_component, num_clusters)
    return cap if p.pca_dim is None else min(p.pca_dim, cap)


def project_spaces(raw_spaces: list[np.ndarray], train: np.ndarray, p, seed: int, num_clusters: int, device="cpu"):
    """Each space's projection (``p.pca_dim``, ``p.rows_per_component``, ``p.whiten``: TURTLE's params), fitted
    on the ``train`` rows, and every row projected (on ``device``)."""
    keep = components_kept(p, int(np.count_nonzero(train)), num_clusters)
    projections = [SpaceProjection.fit(np.asarray(x)[train], keep, p.whiten, seed) for x in raw_spaces]
    return projections, [torch.from_numpy(proj(x)).to(device) for proj, x in zip(projections, raw_spaces)]
